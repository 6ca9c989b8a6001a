//! This CPU's arithmetic peaks, the ceiling of the int8 fast mode: eight independent chains of
//! 256-bit f32 FMAs (8 multiply-adds each) against, all in registers, the AVX2 int8 dot step
//! llama.cpp and candle's Q8_0 kernels use (`vpsignb` for signed activations, `vpmaddubsw`,
//! `vpmaddwd`, `vpaddd`: 32 multiply-adds) and the one `ops::int8` uses (7-bit unsigned
//! activations: two `vpmaddubsw` summed in i16, then one `vpmaddwd` and `vpaddd` for 64).
//! Throughput is in multiply-adds. Here: f32 50, sign trick 81, paired 124 G/s per core.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const STEPS: u64 = 1 << 16;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn f32_fma(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let (x, y) = (_mm256_set1_ps(seed), _mm256_set1_ps(0.999));
    let mut acc = [_mm256_set1_ps(seed); 8];
    for _ in 0..STEPS {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(x, y, *a);
        }
    }
    let mut lanes = [0f32; 8];
    let sum = acc.iter().fold(_mm256_setzero_ps(), |s, &a| _mm256_add_ps(s, a));
    // SAFETY: lanes holds eight f32.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

/// Keeps the products inside the loops: the compiler must assume the weights change every step
/// (they stay in registers, as in a GEMM's inner loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
fn opaque(w: &mut [std::arch::x86_64::__m256i]) {
    for w in w.iter_mut() {
        // SAFETY: an empty instruction that only claims to modify the register.
        unsafe {
            std::arch::asm!(
                "/* {0} */",
                inout(ymm_reg) * w,
                options(nomem, nostack, preserves_flags)
            )
        };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn int8_dot(seed: i8) -> i32 {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut w: [__m256i; 6] = std::array::from_fn(|i| _mm256_set1_epi8(seed.wrapping_add(i as i8)));
    let x = _mm256_set1_epi8(seed);
    let mut acc = [_mm256_setzero_si256(); 6];
    for _ in 0..STEPS {
        for (a, w) in acc.iter_mut().zip(&w) {
            let products = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(*w, x));
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(products, ones));
        }
        opaque(&mut w);
    }
    let sum = acc.iter().fold(_mm256_setzero_si256(), |s, &a| _mm256_add_epi32(s, a));
    _mm256_extract_epi32::<0>(sum)
}

/// Two `vpmaddubsw` summed in i16 per widening: 7-bit unsigned × 7-bit signed keeps the four
/// products of a lane inside i16 (4 · 127 · 63 < 32,768).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn int8_paired(seed: i8) -> i32 {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut w: [__m256i; 6] = std::array::from_fn(|i| _mm256_set1_epi8(seed.wrapping_add(i as i8)));
    let (xa, xb) = (_mm256_set1_epi8(seed), _mm256_set1_epi8(seed.wrapping_add(1)));
    let mut acc = [_mm256_setzero_si256(); 3];
    for _ in 0..STEPS {
        for (i, a) in acc.iter_mut().enumerate() {
            let p = _mm256_add_epi16(
                _mm256_maddubs_epi16(xa, w[2 * i]),
                _mm256_maddubs_epi16(xb, w[2 * i + 1]),
            );
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(p, ones));
        }
        opaque(&mut w);
    }
    let sum = acc.iter().fold(_mm256_setzero_si256(), |s, &a| _mm256_add_epi32(s, a));
    _mm256_extract_epi32::<0>(sum)
}

fn bench(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let mut group = c.benchmark_group("cpu_peak");
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_secs(2));
        group.throughput(Throughput::Elements(STEPS * 8 * 8));
        // SAFETY (all three): the features the functions are compiled for are present.
        group.bench_function("f32_fma_one_core", |b| {
            b.iter(|| unsafe { f32_fma(std::hint::black_box(1.0)) })
        });
        group.throughput(Throughput::Elements(STEPS * 6 * 32));
        group.bench_function("int8_maddubs_one_core", |b| {
            b.iter(|| unsafe { int8_dot(std::hint::black_box(3)) })
        });
        group.bench_function("int8_paired_maddubs_one_core", |b| {
            b.iter(|| unsafe { int8_paired(std::hint::black_box(3)) })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
