//! Mixed precision as PyTorch's autocast does it: parameters, optimiser state, the teacher
//! and the centre stay f32 (the master copy). Inside an [`autocast`] scope the convolutions
//! and the linear layers cast their input, weight and bias down ([`down`]) and leave their
//! output in that precision, so the activations between layers are bf16 (or f16), as
//! autocast keeps them: BatchNorm takes them with its f32 γ, β and statistics and returns
//! the same precision (as cuDNN's and ATen's batch norms do), and ReLU, max pooling, the
//! residual sums and GELU run in it. The heads' outputs come back to f32 ([`up`]), so the
//! grouping, the softmaxes, the losses and their reductions compute in f32. The casts are
//! autodiff ops, so the gradients reach the f32 weights in f32.
//!
//! A parameter that requires gradients is cast once per scope ([`down_param`]), however
//! many forward passes use it (the student's two views), as autocast caches the casts of
//! leaf tensors that require grad: one cast and one saved half-precision copy a step
//! instead of one per pass. The teacher's parameters (no gradients) are cast at each use,
//! as autocast casts them.
//!
//! Like `torch.autocast`, the setting belongs to the thread that runs the forward pass;
//! the backward pass needs none (the casts are in the graph).
//!
//! ```
//! use slotcon_train::amp;
//! use slotcon_train::burn::prelude::*;
//! use slotcon_train::burn::tensor::FloatDType;
//!
//! let x = Tensor::<1>::from_floats([1.0, 2.0], &Device::flex());
//! assert_eq!(amp::down(x.clone()).dtype(), x.dtype()); // no scope: unchanged
//! let _scope = amp::autocast(Some(FloatDType::BF16));
//! assert_eq!(amp::down(x).dtype(), burn::tensor::DType::BF16);
//! ```

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use burn::module::{Param, ParamId};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

thread_local! {
    static COMPUTE: Cell<Option<FloatDType>> = const { Cell::new(None) };
    /// This scope's casts of the parameters that require gradients, by parameter (each a
    /// `Tensor<D>` of its parameter's rank).
    static CASTS: RefCell<HashMap<ParamId, Box<dyn Any>>> = RefCell::new(HashMap::new());
}

/// Restores the previous setting when dropped.
#[must_use = "the autocast scope ends when this is dropped"]
pub struct Autocast {
    previous: Option<FloatDType>,
}

impl Drop for Autocast {
    fn drop(&mut self) {
        COMPUTE.with(|c| c.set(self.previous));
        CASTS.with(|c| c.borrow_mut().clear());
    }
}

/// Until the guard drops, [`down`] casts to `dtype` on this thread (`None`: no casts).
/// The parameters' casts ([`down_param`]) live as long as the scope: a new scope, and the
/// end of one, forget them.
pub fn autocast(dtype: Option<FloatDType>) -> Autocast {
    CASTS.with(|c| c.borrow_mut().clear());
    Autocast {
        previous: COMPUTE.with(|c| c.replace(dtype)),
    }
}

/// A parameter (a weight or a bias) for a convolution or matmul: [`down`] of its value,
/// cast once per scope when it requires gradients (the same cast, a node of the graph
/// whose gradient sums every use's, for every later use in the scope).
pub fn down_param<const D: usize>(param: &Param<Tensor<D>>) -> Tensor<D> {
    let value = param.val();
    let Some(dtype) = COMPUTE.with(Cell::get) else {
        return value;
    };
    if DType::from(dtype) == value.dtype() || !value.is_require_grad() {
        return down(value);
    }
    CASTS.with(|c| {
        let mut casts = c.borrow_mut();
        if let Some(cast) = casts.get(&param.id).and_then(|t| t.downcast_ref::<Tensor<D>>()) {
            return cast.clone();
        }
        let cast = value.cast(dtype);
        casts.insert(param.id, Box::new(cast.clone()));
        cast
    })
}

/// The input of a convolution or matmul: in the autocast precision when one is set.
pub fn down<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match COMPUTE.with(Cell::get) {
        Some(dtype) if DType::from(dtype) != x.dtype() => x.cast(dtype),
        _ => x,
    }
}

/// The output of an autocast region (a head's last layer): back to f32 when an autocast
/// scope is set.
pub fn up<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match COMPUTE.with(Cell::get) {
        Some(_) if x.dtype() != DType::F32 => x.cast(FloatDType::F32),
        _ => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `d loss / d param` for `loss = Σ param·1 + Σ param·2⁻⁹`, its two uses under one
    /// bf16 scope or under one scope each.
    fn grad(one_scope: bool) -> Vec<f32> {
        let device = Device::flex().autodiff();
        let param = Param::from_tensor(Tensor::<1>::from_floats([1.0, 2.0], &device).require_grad());
        let term = |c: f32| {
            let w = down_param(&param);
            up((w * down(Tensor::<1>::from_floats([c, c], &device))).sum())
        };
        let mut scope = autocast(Some(FloatDType::BF16));
        let first = term(1.0);
        if !one_scope {
            drop(scope);
            scope = autocast(Some(FloatDType::BF16));
        }
        let loss = first + term(2f32.powi(-9));
        drop(scope);
        let grads = loss.backward();
        param
            .val()
            .grad(&grads)
            .unwrap()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    }

    /// One cast per scope: the two uses' gradients meet at that cast, in bf16, where
    /// 1 + 2⁻⁹ rounds to 1 (autocast's cached cast does the same); two casts (two scopes)
    /// each bring their gradient back to f32 first, which keeps the 2⁻⁹.
    #[test]
    fn a_parameter_is_cast_once_per_scope() {
        assert_eq!(grad(false), [1.0 + 2f32.powi(-9); 2]);
        assert_eq!(grad(true), [1.0; 2]);
    }
}
