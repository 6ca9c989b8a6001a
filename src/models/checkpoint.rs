//! Gradient checkpointing over a chain of stages (a model's layers, in order) and a head that
//! turns the last stage's output into the loss. The chain runs forward without graphs, keeping
//! each stage's input; the head's parts are backpropagated one at a time, then the stages are
//! recomputed one at a time from the last, each backpropagating the gradient of its output
//! into its parameters and its input. Only one stage's (or head part's) activations are alive
//! at once, for one extra forward pass.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// A model as a chain: `stage(i, xs)` maps stage i's inputs (one tensor per example, or one for
/// a batch) to its outputs; `head(part, xs)` is one of `head_parts` terms of the loss sum over
/// the last stage's outputs.
pub struct Chain<S, H> {
    pub stages: usize,
    pub stage: S,
    pub head_parts: usize,
    pub head: H,
}

impl<S, H> Chain<S, H>
where
    S: Fn(usize, &[Tensor]) -> Result<Vec<Tensor>>,
    H: Fn(usize, &[Tensor]) -> Result<Tensor>,
{
    /// Backpropagates `scale` × the loss from `input`, handing each partial backward pass's
    /// gradients to `sink` (to be summed by tensor); returns the unscaled loss.
    pub fn backward(&self, input: &[Tensor], scale: f64, mut sink: impl FnMut(GradStore) -> Result<()>) -> Result<f64> {
        let mut saved = Vec::with_capacity(self.stages);
        let mut first_trained = None;
        let mut xs: Vec<Tensor> = input.iter().map(Tensor::detach).collect();
        for i in 0..self.stages {
            let out = (self.stage)(i, &xs)?;
            // Its input detached, an output tracks only through the stage's own parameters.
            if first_trained.is_none() && out.iter().any(Tensor::track_op) {
                first_trained = Some(i);
            }
            saved.push(std::mem::replace(&mut xs, out.iter().map(Tensor::detach).collect()));
        }
        let vars = as_vars(&xs)?;
        let inputs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut loss = 0.0;
        for part in 0..self.head_parts {
            let term = (self.head)(part, &inputs)?;
            loss += term.to_scalar::<f32>()? as f64;
            if !term.track_op() {
                continue;
            }
            let mut store = (term * scale)?.backward()?;
            for (acc, var) in grads.iter_mut().zip(&vars) {
                if let Some(g) = store.remove(var.as_tensor()) {
                    *acc = Some(match acc.take() {
                        Some(a) => (a + g)?,
                        None => g,
                    });
                }
            }
            sink(store)?;
        }
        let Some(first) = first_trained else {
            return Ok(loss);
        };
        for i in (first..self.stages).rev() {
            let stage_input = std::mem::take(&mut saved[i]);
            // The first trained stage's input needs no gradient.
            let vars = if i > first { as_vars(&stage_input)? } else { Vec::new() };
            let inputs: Vec<Tensor> = if i > first {
                vars.iter().map(|v| v.as_tensor().clone()).collect()
            } else {
                stage_input
            };
            let mut surrogate: Option<Tensor> = None;
            for (out, grad) in (self.stage)(i, &inputs)?.iter().zip(&grads) {
                if let Some(grad) = grad {
                    let term = (out * grad)?.sum_all()?;
                    surrogate = Some(match surrogate {
                        Some(s) => (s + term)?,
                        None => term,
                    });
                }
            }
            let Some(surrogate) = surrogate else {
                break;
            };
            let mut store = surrogate.backward()?;
            grads = vars.iter().map(|v| store.remove(v.as_tensor())).collect();
            sink(store)?;
        }
        Ok(loss)
    }
}

fn as_vars(xs: &[Tensor]) -> Result<Vec<Var>> {
    Ok(xs.iter().map(Var::from_tensor).collect::<candle_core::Result<_>>()?)
}
