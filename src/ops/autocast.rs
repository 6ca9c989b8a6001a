//! Mixed precision as `torch.autocast`: while a scope is open on this thread, linear layers
//! compute in its dtype (input, weight and bias rounded to it) and hand back the input's dtype,
//! so master weights, their gradients, norms, softmax and the loss stay f32. The scope is
//! per thread, as PyTorch's autocast state is; a model's forward (and a checkpointed backward's
//! recomputation) runs on the thread that opened it.

use std::cell::Cell;

use candle_core::DType;

thread_local! {
    static DTYPE: Cell<Option<DType>> = const { Cell::new(None) };
}

/// The dtype linear layers compute in here, if a scope is open.
pub fn dtype() -> Option<DType> {
    DTYPE.with(Cell::get)
}

/// Runs `f` with linear layers computing in `dtype` (`None`: as they are), then restores the
/// previous state.
pub fn scope<R>(dtype: Option<DType>, f: impl FnOnce() -> R) -> R {
    let previous = DTYPE.with(|d| d.replace(dtype));
    let out = f();
    DTYPE.with(|d| d.set(previous));
    out
}
