//! AdamW, global-norm gradient clipping and learning-rate schedules, with PyTorch's semantics:
//! the same formulas in the same order as `torch.optim.AdamW` (single-tensor path),
//! `clip_grad_norm_` and the fork's `get_lr` functions, so that a run is in step with theirs.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor, Var};
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
pub struct AdamW {
    pub config: AdamWConfig,
    params: Vec<(String, Var)>,
    /// (exp_avg, exp_avg_sq) per parameter.
    moments: Vec<(Tensor, Tensor)>,
    /// Optimizer steps taken (PyTorch's `state["step"]`).
    pub steps: u64,
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        let moments = params
            .iter()
            .map(|(_, v)| {
                let z = Tensor::zeros(v.shape(), DType::F32, v.device())?;
                Ok((z.clone(), z))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            config,
            params,
            moments,
            steps: 0,
        })
    }

    pub fn params(&self) -> &[(String, Var)] {
        &self.params
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
        let step_size = lr / bias_correction1;
        let bias_correction2_sqrt = bias_correction2.sqrt();
        for (((_, var), (m, v)), grad) in self.params.iter().zip(self.moments.iter_mut()).zip(grads) {
            let Some(grad) = grad else {
                continue;
            };
            let grad = grad.to_dtype(DType::F32)?;
            let theta = var.as_tensor().detach().to_dtype(DType::F32)?;
            let theta = if c.weight_decay != 0.0 {
                (theta * (1.0 - lr * c.weight_decay))?
            } else {
                theta
            };
            // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
            *m = (&*m + ((&grad - &*m)? * (1.0 - c.beta1))?)?;
            *v = ((&*v * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((v.sqrt()? / bias_correction2_sqrt)? + c.eps)?;
            let theta = (theta - (m.div(&denom)? * step_size)?)?;
            var.set(&theta.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// The moments by parameter name (`exp_avg.<name>`, `exp_avg_sq.<name>`), for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.moments)
            .flat_map(|((name, _), (m, v))| {
                [
                    (format!("exp_avg.{name}"), m.clone()),
                    (format!("exp_avg_sq.{name}"), v.clone()),
                ]
            })
            .collect()
    }

    /// Restores what [`AdamW::state`] saved.
    pub fn load_state(&mut self, steps: u64, mut get: impl FnMut(&str) -> Result<Tensor>) -> Result<()> {
        for ((name, var), (m, v)) in self.params.iter().zip(self.moments.iter_mut()) {
            let (em, ev) = (get(&format!("exp_avg.{name}"))?, get(&format!("exp_avg_sq.{name}"))?);
            if em.shape() != var.shape() || ev.shape() != var.shape() {
                bail!(
                    "optimizer state for {name} has shape {:?}, the parameter {:?}",
                    em.shape(),
                    var.shape()
                );
            }
            (*m, *v) = (em.to_device(var.device())?, ev.to_device(var.device())?);
        }
        self.steps = steps;
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
