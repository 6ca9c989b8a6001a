//! Model architectures, each in the shape of its reference implementation.

pub mod qwen2_5_vl;
