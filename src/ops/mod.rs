//! Tensor operations shared by the models: attention, rotary embeddings, normalisation.
//!
//! These are the CPU reference paths; they are written with plain candle ops, so they also
//! carry gradients where the trainer needs them.

pub mod attention;
pub mod norm;
pub mod paged_attention;
pub mod rotary;
