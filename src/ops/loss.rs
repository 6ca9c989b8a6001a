//! Cross-entropy in plain ops (it carries gradients), as `F.cross_entropy(reduction="sum")`.

use candle_core::{Result, Tensor};

/// Σ −log softmax(logits)\[wanted\] over the rows of `logits` (rows, vocab), f32.
pub fn cross_entropy_sum(logits: &Tensor, wanted: &[u32]) -> Result<Tensor> {
    // The max shift cancels exactly; detached, it adds no noise to the gradient.
    let max = logits.max_keepdim(1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(1)?.log()?;
    let picked = shifted.gather(&Tensor::new(wanted, logits.device())?.unsqueeze(1)?, 1)?;
    (log_z - picked)?.sum_all()
}
