//! Tensor operations shared by the models: attention, rotary embeddings, normalisation,
//! activations.
//!
//! Each operation has a CPU twin written with plain candle ops (it carries gradients where the
//! trainer needs them) and, with the `cuda` feature, a kernel of kernels/*.cu. The public
//! functions pick the kernel for CUDA tensors that carry no gradient, the twin otherwise; the
//! twins are public too, as the kernels' references.

pub mod activation;
pub mod attention;
#[cfg(feature = "cuda")]
pub mod kernels;
pub mod norm;
pub mod paged_attention;
pub mod rotary;

/// Whether the kernels serve a call over these tensors: all on a CUDA device in a kernel dtype,
/// none tracked for backprop (the kernels have no backward pass; the twins do).
#[cfg(feature = "cuda")]
fn on_kernels(tensors: &[&candle_core::Tensor]) -> bool {
    tensors.iter().all(|t| kernels::takes(t) && !t.track_op())
}
