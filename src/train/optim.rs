//! AdamW, global-norm gradient clipping and learning-rate schedules, with PyTorch's semantics:
//! the same formulas in the same order as `torch.optim.AdamW` (single-tensor path),
//! `clip_grad_norm_` and the fork's `get_lr` functions, so that a run is in step with theirs.

use anyhow::{bail, Result};
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults but the weight decay, which the fork's scripts set to 0.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW over named parameters. Moments are f32 whatever the parameters' dtype.
///
/// f32 parameters on the CPU are updated in place, two passes over each tensor and no
/// temporaries (the composed form below allocates about ten tensors of each parameter's size
/// per step); elsewhere the same formulas run as tensor ops.
pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<(String, Var)>,
    /// exp_avg and exp_avg_sq of each parameter, stacked: (2, ..shape).
    moments: Vec<Tensor>,
    /// Optimizer steps taken (PyTorch's `state["step"]`).
    pub steps: u64,
    /// Update f32 CPU parameters in place (off: the composed form everywhere, for tests).
    in_place: bool,
    /// Each parameter's learning rate as a fraction of the step's.
    lr_scales: Vec<f64>,
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let moments = params
            .iter()
            .map(|(_, v)| Ok(Tensor::zeros(moments_shape(v), DType::F32, v.device())?))
            .collect::<Result<_>>()?;
        Ok(Self {
            config,
            lr_scales: vec![1.0; params.len()],
            params,
            moments,
            steps: 0,
            in_place: true,
        })
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Scales each parameter's learning rate (and so its weight decay) by `scale(name)`.
    pub fn set_lr_scales(&mut self, scale: impl Fn(&str) -> f64) {
        self.lr_scales = self.params.iter().map(|(name, _)| scale(name)).collect();
    }

    /// One update at `lr` with `grads` (already clipped), one per parameter in order. A
    /// parameter without a gradient (not reached by the loss) is left alone, as PyTorch skips
    /// parameters whose `.grad` is None.
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let bias_correction1 = 1.0 - c.beta1.powi(t);
        let bias_correction2 = 1.0 - c.beta2.powi(t);
        let bias_correction2_sqrt = bias_correction2.sqrt();
        for ((((_, var), moments), grad), scale) in self
            .params
            .iter()
            .zip(self.moments.iter_mut())
            .zip(grads)
            .zip(&self.lr_scales)
        {
            let Some(grad) = grad else {
                continue;
            };
            let lr = lr * scale;
            let step_size = lr / bias_correction1;
            let grad = grad.to_dtype(DType::F32)?.contiguous()?;
            if self.in_place && var.device().is_cpu() && var.dtype() == DType::F32 && var.is_contiguous() {
                moments.inplace_op2(&grad, &MomentsUpdate { config: c })?;
                var.as_tensor().inplace_op2(
                    moments,
                    &ParamUpdate {
                        decay: (1.0 - lr * c.weight_decay) as f32,
                        decays: c.weight_decay != 0.0,
                        step_size: step_size as f32,
                        bias_correction2_sqrt: bias_correction2_sqrt as f32,
                        eps: c.eps as f32,
                    },
                )?;
                continue;
            }
            let (m, v) = (moments.get(0)?, moments.get(1)?);
            let theta = var.as_tensor().detach().to_dtype(DType::F32)?;
            let theta = if c.weight_decay != 0.0 {
                (theta * (1.0 - lr * c.weight_decay))?
            } else {
                theta
            };
            // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
            let m = (&m + ((&grad - &m)? * (1.0 - c.beta1))?)?;
            let v = ((&v * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((v.sqrt()? / bias_correction2_sqrt)? + c.eps)?;
            let theta = (theta - (m.div(&denom)? * step_size)?)?;
            var.set(&theta.to_dtype(var.dtype())?)?;
            *moments = Tensor::stack(&[m, v], 0)?;
        }
        Ok(())
    }

    /// The moments by parameter name (`exp_avg.<name>`, `exp_avg_sq.<name>`), for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.moments)
            .flat_map(|((name, _), mv)| {
                [("exp_avg", 0), ("exp_avg_sq", 1)].map(|(kind, i)| {
                    let t = mv
                        .get(i)
                        .and_then(|t| t.contiguous())
                        .expect("moments are (2, ..shape)");
                    (format!("{kind}.{name}"), t)
                })
            })
            .collect()
    }

    /// Restores what [`AdamW::state`] saved.
    pub fn load_state(&mut self, steps: u64, mut get: impl FnMut(&str) -> Result<Tensor>) -> Result<()> {
        for ((name, var), mv) in self.params.iter().zip(self.moments.iter_mut()) {
            let (em, ev) = (get(&format!("exp_avg.{name}"))?, get(&format!("exp_avg_sq.{name}"))?);
            if em.shape() != var.shape() || ev.shape() != var.shape() {
                bail!(
                    "optimizer state for {name} has shape {:?}, the parameter {:?}",
                    em.shape(),
                    var.shape()
                );
            }
            *mv = Tensor::stack(&[em.to_dtype(DType::F32)?, ev.to_dtype(DType::F32)?], 0)?.to_device(var.device())?;
        }
        self.steps = steps;
        Ok(())
    }
}

fn moments_shape(v: &Var) -> Vec<usize> {
    std::iter::once(2).chain(v.dims().iter().copied()).collect()
}

/// The contiguous f32 values of a CPU storage, or an error naming `op`.
fn f32s<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: wants contiguous f32"),
    }
}

fn f32s_mut<'a>(op: &str, s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{op}: wants contiguous f32"),
    }
}

/// Elements per rayon task: big enough that scheduling is noise, small enough to split the
/// large matrices over the cores.
const CHUNK: usize = 1 << 14;

/// exp_avg.lerp_(grad, 1 − β1); exp_avg_sq.mul_(β2).addcmul_(grad, grad, 1 − β2), in place on
/// the stacked moments, each element in f32 and in the order PyTorch's CPU kernels compute it.
struct MomentsUpdate {
    config: AdamWConfig,
}

impl InplaceOp2 for MomentsUpdate {
    fn name(&self) -> &'static str {
        "adamw-moments"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let mv = f32s_mut(self.name(), s1, l1)?;
        let grad = f32s(self.name(), s2, l2)?;
        let (m, v) = mv.split_at_mut(grad.len());
        let (w1, b2, w2) = (
            (1.0 - self.config.beta1) as f32,
            self.config.beta2 as f32,
            (1.0 - self.config.beta2) as f32,
        );
        m.par_chunks_mut(CHUNK)
            .zip(v.par_chunks_mut(CHUNK))
            .zip(grad.par_chunks(CHUNK))
            .for_each(|((m, v), g)| {
                for ((m, v), &g) in m.iter_mut().zip(v.iter_mut()).zip(g) {
                    // torch.lerp with a weight under ½: self + weight · (end − self).
                    *m += w1 * (g - *m);
                    *v = *v * b2 + w2 * g * g;
                }
            });
        Ok(())
    }
}

/// param.mul_(1 − lr·wd); param.addcdiv_(exp_avg, exp_avg_sq.sqrt() / √bc2 + ε, −step_size).
struct ParamUpdate {
    decay: f32,
    decays: bool,
    step_size: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
}

impl InplaceOp2 for ParamUpdate {
    fn name(&self) -> &'static str {
        "adamw-param"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let theta = f32s_mut(self.name(), s1, l1)?;
        let (m, v) = f32s(self.name(), s2, l2)?.split_at(theta.len());
        theta
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK))
            .zip(v.par_chunks(CHUNK))
            .for_each(|((theta, m), v)| {
                for ((t, &m), &v) in theta.iter_mut().zip(m).zip(v) {
                    if self.decays {
                        *t *= self.decay;
                    }
                    let denom = v.sqrt() / self.bias_correction2_sqrt + self.eps;
                    // addcdiv: self + value · t1 / t2, left to right as PyTorch's CPU kernel.
                    *t += -self.step_size * m / denom;
                }
            });
        Ok(())
    }
}

/// `torch.nn.utils.clip_grad_norm_`: the L2 norm of the per-parameter gradient norms; every
/// gradient is multiplied by `min(1, max_norm / (norm + 1e-6))` (always, as PyTorch's foreach
/// path does). Returns the norm before clipping. `max_norm <= 0` only measures.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads.iter().flatten() {
        let n = g.to_dtype(DType::F32)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()? as f64;
        sq += n * n;
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 {
        let coef = (max_norm / (norm + 1e-6)).min(1.0);
        for g in grads.iter_mut().flatten() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

/// How the learning rate moves over the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "schedule", rename_all = "lowercase")]
pub enum Schedule {
    /// Stage 1 (`vis_tok_train.get_lr`): linear warmup, then cosine to 0 at `steps`.
    Cosine { warmup: usize, steps: usize },
    /// Stage 2 (`vis_mid_train.get_lr`): linear warmup, then × `gamma` every `decay_step` steps.
    Step {
        warmup: usize,
        decay_step: usize,
        gamma: f64,
    },
    /// Linear warmup, then constant.
    Constant { warmup: usize },
    /// olmOCR's (transformers' `get_linear_schedule_with_warmup`): up over `warmup`, then
    /// linearly to 0 at `steps`.
    Linear { warmup: usize, steps: usize },
}

impl Schedule {
    /// The rate at (0-based) `step` for a peak rate `lr`.
    pub fn lr(&self, lr: f64, step: usize) -> f64 {
        let warm = |w: usize| (step < w).then(|| lr * (step + 1) as f64 / w as f64);
        match *self {
            Schedule::Cosine { warmup, steps } => warm(warmup).unwrap_or_else(|| {
                let progress = (step - warmup) as f64 / steps.saturating_sub(warmup).max(1) as f64;
                lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }),
            Schedule::Step {
                warmup,
                decay_step,
                gamma,
            } => warm(warmup).unwrap_or_else(|| lr * gamma.powi(((step - warmup) / decay_step.max(1)) as i32)),
            Schedule::Constant { warmup } => warm(warmup).unwrap_or(lr),
            // transformers: step / warmup while warming up (0 at step 0), then
            // (steps - step) / (steps - warmup).
            Schedule::Linear { warmup, steps } => {
                if step < warmup {
                    lr * step as f64 / warmup.max(1) as f64
                } else {
                    lr * (steps.saturating_sub(step) as f64 / steps.saturating_sub(warmup).max(1) as f64).max(0.0)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place update against the composed one (PyTorch's formulas as tensor ops, the
    /// form the fork-parity tests first pinned): five steps with weight decay, parameters
    /// larger than a task's chunk and smaller, one step without a gradient.
    #[test]
    fn in_place_adamw_equals_the_composed_form() {
        let dev = candle_core::Device::Cpu;
        let shapes: [&[usize]; 3] = [&[3, 5], &[CHUNK + 37], &[64, 700]];
        let make = || -> Vec<(String, Var)> {
            shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let t = Tensor::randn(0f32, 1., *s, &dev).unwrap();
                    (format!("p{i}"), Var::from_tensor(&t).unwrap())
                })
                .collect()
        };
        let config = AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        };
        let params = make();
        let copy: Vec<(String, Var)> = params
            .iter()
            .map(|(n, v)| (n.clone(), Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap()))
            .collect();
        let mut fused = AdamW::new(params, config).unwrap();
        let mut composed = AdamW::new(copy, config).unwrap();
        composed.in_place = false;
        for step in 0..5 {
            let grads: Vec<Option<Tensor>> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| (i != 1 || step != 2).then(|| Tensor::randn(0f32, 0.1, *s, &dev).unwrap()))
                .collect();
            fused.step(&grads, 1e-3).unwrap();
            composed.step(&grads, 1e-3).unwrap();
        }
        let rel = |a: &Tensor, b: &Tensor| -> f32 {
            let d: f32 = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            let m: f32 = b.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            d / m
        };
        for ((name, a), (_, b)) in fused.params().iter().zip(composed.params()) {
            assert!(rel(a.as_tensor(), b.as_tensor()) < 1e-6, "{name}");
        }
        for ((name, a), (_, b)) in fused.state().iter().zip(composed.state()) {
            assert!(rel(a, &b) < 1e-5, "{name}: {}", rel(a, &b));
        }
    }

    /// A parameter scaled to 0 stays put; one scaled to ½ moves as at half the rate.
    #[test]
    fn lr_scales_apply_per_parameter() {
        let dev = candle_core::Device::Cpu;
        let start = Tensor::randn(0f32, 1., (4, 8), &dev).unwrap();
        let params = || -> Vec<(String, Var)> {
            ["frozen", "half"]
                .map(|n| (n.to_string(), Var::from_tensor(&start.copy().unwrap()).unwrap()))
                .into()
        };
        let grad = Tensor::randn(0f32, 1., (4, 8), &dev).unwrap();
        let mut scaled = AdamW::new(params(), AdamWConfig::default()).unwrap();
        scaled.set_lr_scales(|n| if n == "frozen" { 0.0 } else { 0.5 });
        let mut half = AdamW::new(params(), AdamWConfig::default()).unwrap();
        for _ in 0..3 {
            scaled.step(&[Some(grad.clone()), Some(grad.clone())], 1e-2).unwrap();
            half.step(&[Some(grad.clone()), Some(grad.clone())], 5e-3).unwrap();
        }
        let diff = |a: &Tensor, b: &Tensor| crate::ops::rel_l2(a, b).unwrap();
        assert_eq!(diff(scaled.params()[0].1.as_tensor(), &start), 0.0);
        assert_eq!(
            diff(scaled.params()[1].1.as_tensor(), half.params()[1].1.as_tensor()),
            0.0
        );
        assert!(diff(half.params()[1].1.as_tensor(), &start) > 1e-3);
    }

    #[test]
    fn schedules_follow_the_reference_formulas() {
        // vis_tok_train.get_lr with lr 5e-5, warmup 10, steps 300.
        let cos = Schedule::Cosine { warmup: 10, steps: 300 };
        assert!((cos.lr(5e-5, 0) - 5e-6).abs() < 1e-18);
        assert!((cos.lr(5e-5, 10) - 5e-5).abs() < 1e-18);
        assert!((cos.lr(5e-5, 155) - 2.5e-5).abs() < 1e-12);
        // vis_mid_train.get_lr: warmup 100, then ×0.1 every 2000 steps.
        let st = Schedule::Step {
            warmup: 100,
            decay_step: 2000,
            gamma: 0.1,
        };
        assert_eq!(st.lr(3e-5, 2099), 3e-5);
        assert!((st.lr(3e-5, 2100) - 3e-6).abs() < 1e-18);
        // get_linear_schedule_with_warmup(warmup 10, total 100): 0 at step 0, peak at 10, 0 at 100.
        let lin = Schedule::Linear { warmup: 10, steps: 100 };
        assert_eq!(lin.lr(2e-5, 0), 0.0);
        assert_eq!(lin.lr(2e-5, 10), 2e-5);
        assert!((lin.lr(2e-5, 55) - 1e-5).abs() < 1e-18);
        assert_eq!(lin.lr(2e-5, 100), 0.0);
    }
}
