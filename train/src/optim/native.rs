//! One parameter's update as a backend operation: the LARS step and the teacher's EMA; and
//! fp16's unscale of all the gradients at once.
//!
//! On LibTorch each is the reference's own ATen calls (`native/optim.cpp`): 11 for a LARS
//! step with the trust ratio, 3 without, 2 for an EMA, where Burn's generic ops take about
//! twice as many (a norm as a reshape, a transpose and a matmul, a scalar broadcast by a
//! reshape). Flex keeps Burn's generic ops.

// burn-tch's `LibTorch` is deprecated upstream but is the LibTorch path DESIGN §7 asks for;
// the extension macro names it in generated code.
#![allow(deprecated)]

use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, get_or_init_device_settings, Backend, Flex, TensorMetadata};

/// One LARS (or SGD) step's hyper-parameters: `[weight decay, trust coefficient η,
/// momentum]`, and whether this parameter takes `[the decay, the trust ratio]`.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// `[weight decay, η, momentum]`.
    pub hyper: [f64; 3],
    /// `[decay, trust ratio]`.
    pub apply: [bool; 2],
}

/// The parameter updates, with the backend's own kernels where it has them.
#[backend_extension(Flex, LibTorch: cfg(feature = "tch"))]
pub trait NativeUpdate: Backend {
    /// `(new parameter, new momentum buffer)` after one step of `rule` at `lr`. `velocity`
    /// is the buffer, unread when `first` (then it may be any tensor, `grad` say).
    fn lars_native(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        first: bool,
        lr: f64,
        rule: Rule,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [wd, eta, m] = rule.hyper;
        let [decay, trust] = rule.apply;
        let mut g = grad;
        if decay {
            g = Self::float_add(g, Self::float_mul_scalar(param.clone(), wd.into()));
        }
        if trust {
            g = Self::float_mul(g.clone(), trust_ratio::<Self>(&param, &g, eta));
        }
        let v = match first {
            true => g,
            false => Self::float_add(Self::float_mul_scalar(velocity, m.into()), g),
        };
        let next = Self::float_sub(param, Self::float_mul_scalar(v.clone(), lr.into()));
        (next, v)
    }

    /// `m·teacher + (1 − m)·student`.
    fn ema_native(teacher: FloatTensor<Self>, student: FloatTensor<Self>, momentum: f64) -> FloatTensor<Self> {
        Self::float_add(
            Self::float_mul_scalar(teacher, momentum.into()),
            Self::float_mul_scalar(student, (1.0 - momentum).into()),
        )
    }
}

/// `η‖p‖/‖g‖` where both norms are positive, else 1, shaped `[1, 1, ...]` like `p`: on
/// the device, no host read.
fn trust_ratio<B: Backend>(p: &FloatTensor<B>, g: &FloatTensor<B>, eta: f64) -> FloatTensor<B> {
    let norm = |t: &FloatTensor<B>| B::float_sqrt(B::float_sum(B::float_mul(t.clone(), t.clone())));
    let (pn, gn) = (norm(p), norm(g));
    let bools = get_or_init_device_settings::<B>(&pn.device()).bool_dtype;
    let usable = B::bool_and(
        B::float_greater_elem(pn.clone(), 0.0.into(), bools),
        B::float_greater_elem(gn.clone(), 0.0.into(), bools),
    );
    let q = B::float_div(B::float_mul_scalar(pn, eta.into()), gn);
    let one = B::float_ones(q.shape(), &q.device(), q.dtype().into());
    let q = B::float_mask_where(one, usable, q);
    B::float_reshape(q, vec![1; p.shape().num_dims()].into())
}

impl NativeUpdate for Flex {}

#[cfg(feature = "tch")]
impl NativeUpdate for burn::backend::LibTorch {
    fn lars_native(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        velocity: FloatTensor<Self>,
        first: bool,
        lr: f64,
        rule: Rule,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        torch::lars(&param, &grad, (!first).then_some(&velocity), lr, rule)
    }

    fn ema_native(teacher: FloatTensor<Self>, student: FloatTensor<Self>, momentum: f64) -> FloatTensor<Self> {
        torch::ema(&teacher, &student, momentum)
    }
}

/// `native/optim.cpp` through its C ABI.
#[cfg(feature = "tch")]
pub(crate) mod torch {
    use std::ffi::{c_char, c_void};

    use burn::backend::tensor::FloatTensor;
    use burn::backend::LibTorch;

    use super::Rule;
    use crate::model::torch_ops::{adopt, check};

    extern "C" {
        fn slotcon_ema(
            teacher: *const c_void,
            student: *const c_void,
            momentum: f64,
            out: *mut *mut c_void,
        ) -> *mut c_char;
        fn slotcon_lars(
            param: *const c_void,
            grad: *const c_void,
            velocity: *const c_void,
            lr: f64,
            weight_decay: f64,
            eta: f64,
            momentum: f64,
            decay: bool,
            trust: bool,
            param_out: *mut *mut c_void,
            velocity_out: *mut *mut c_void,
        ) -> *mut c_char;
        fn slotcon_unscale(
            grads: *const *const c_void,
            n: usize,
            inv_scale: f32,
            out: *mut *mut c_void,
            found_inf: *mut *mut c_void,
        ) -> *mut c_char;
    }

    fn ptr(t: &FloatTensor<LibTorch>) -> *const c_void {
        t.tensor.as_ptr().cast()
    }

    pub(super) fn ema(
        teacher: &FloatTensor<LibTorch>,
        student: &FloatTensor<LibTorch>,
        momentum: f64,
    ) -> FloatTensor<LibTorch> {
        let mut out = std::ptr::null_mut();
        // SAFETY: both tensor pointers are live `at::Tensor`s borrowed for the call and the
        // out-pointer is valid for a write. The shim catches every C++ exception.
        let message = unsafe { slotcon_ema(ptr(teacher), ptr(student), momentum, &mut out) };
        check("the teacher's EMA", message);
        adopt(out).expect("the shim returns the tensor on success")
    }

    pub(super) fn lars(
        param: &FloatTensor<LibTorch>,
        grad: &FloatTensor<LibTorch>,
        velocity: Option<&FloatTensor<LibTorch>>,
        lr: f64,
        rule: Rule,
    ) -> (FloatTensor<LibTorch>, FloatTensor<LibTorch>) {
        let [wd, eta, m] = rule.hyper;
        let [decay, trust] = rule.apply;
        let mut out: [*mut c_void; 2] = [std::ptr::null_mut(); 2];
        let [p, v] = &mut out;
        // SAFETY: the tensor pointers are live `at::Tensor`s borrowed for the call (the
        // buffer's null when absent, as the shim allows) and the two out-pointers are valid
        // for writes. The shim catches every C++ exception.
        let message = unsafe {
            slotcon_lars(
                ptr(param),
                ptr(grad),
                velocity.map_or(std::ptr::null(), ptr),
                lr,
                wd,
                eta,
                m,
                decay,
                trust,
                p,
                v,
            )
        };
        check("the LARS step", message);
        let [p, v] = out.map(|t| adopt(t).expect("the shim returns both tensors on success"));
        (p, v)
    }

    /// Each gradient times `inv_scale`, and a one-element f32 tensor, 1 when a result
    /// holds an inf or a NaN, else 0 (GradScaler's kernels; `grads` may be empty).
    pub(crate) fn unscale(
        grads: &[FloatTensor<LibTorch>],
        inv_scale: f32,
    ) -> (Vec<FloatTensor<LibTorch>>, FloatTensor<LibTorch>) {
        let ptrs: Vec<*const c_void> = grads.iter().map(ptr).collect();
        let mut out: Vec<*mut c_void> = vec![std::ptr::null_mut(); grads.len()];
        let mut found = std::ptr::null_mut();
        // SAFETY: `ptrs` holds `grads.len()` live `at::Tensor`s borrowed for the call, `out`
        // as many writable slots, and `found` one. The shim catches every C++ exception
        // and leaves every slot null on failure.
        let message = unsafe { slotcon_unscale(ptrs.as_ptr(), ptrs.len(), inv_scale, out.as_mut_ptr(), &mut found) };
        check("the gradients' unscale", message);
        let take = |t: *mut c_void| adopt(t).expect("the shim returns every tensor on success");
        (out.into_iter().map(take).collect(), take(found))
    }
}
