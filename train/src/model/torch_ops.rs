//! LibTorch's `at::convolution_backward` and `at::native_batch_norm_backward` through
//! `native/backward.cpp` (compiled by build.rs), the batch-norm forward they pair with, and
//! the memory format of a tensor (`channels_last`).

use std::ffi::{c_char, c_void, CStr};

use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
#[allow(deprecated)] // burn-tch is deprecated upstream but is the LibTorch path DESIGN §7 asks for
use burn::backend::LibTorch;

extern "C" {
    fn slotcon_conv2d_backward(
        grad_output: *const c_void,
        input: *const c_void,
        weight: *const c_void,
        stride: *const i64,
        padding: *const i64,
        dilation: *const i64,
        groups: i64,
        want_input: bool,
        want_weight: bool,
        grad_input: *mut *mut c_void,
        grad_weight: *mut *mut c_void,
    ) -> *mut c_char;
    fn slotcon_batch_norm_backward(
        grad_output: *const c_void,
        input: *const c_void,
        weight: *const c_void,
        save_mean: *const c_void,
        save_invstd: *const c_void,
        eps: f64,
        grad_input: *mut *mut c_void,
        grad_weight: *mut *mut c_void,
        grad_bias: *mut *mut c_void,
    ) -> *mut c_char;
    fn slotcon_free_message(message: *mut c_char);
    fn slotcon_memory_format(input: *const c_void, channels_last: bool, out: *mut *mut c_void) -> *mut c_char;
}

fn pair(v: [usize; 2]) -> [i64; 2] {
    v.map(|x| x as i64)
}

/// Takes ownership of a tensor the shim allocated (null: not asked for).
#[allow(deprecated)] // LibTorch, see above
pub(crate) fn adopt(ptr: *mut c_void) -> Option<FloatTensor<LibTorch>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null pointer from `slotcon_conv2d_backward` is a fresh `new at::Tensor`,
    // which is what tch's `C_tensor` is; tch frees it with `delete` on drop, and nothing
    // else holds it.
    let tensor = unsafe { tch::Tensor::from_ptr(ptr.cast()) };
    Some(<FloatTensor<LibTorch>>::new(tensor))
}

/// `(d x, d weight)` of `conv2d(x, weight)` (no bias) for `grad`, each when `want`ed.
#[allow(deprecated)] // LibTorch, see above
pub fn conv2d_backward(
    x: &FloatTensor<LibTorch>,
    weight: &FloatTensor<LibTorch>,
    grad: &FloatTensor<LibTorch>,
    options: &ConvOptions<2>,
    want: [bool; 2],
) -> [Option<FloatTensor<LibTorch>>; 2] {
    let padding = pair(options.padding.map(|(begin, _)| begin));
    let (stride, dilation) = (pair(options.stride), pair(options.dilation));
    let mut out: [*mut c_void; 2] = [std::ptr::null_mut(); 2];
    let [gi, gw] = &mut out;
    // SAFETY: the three tensor pointers are live `at::Tensor`s borrowed for the call, the
    // three arrays hold two elements each as the shim reads, and the two out-pointers are
    // valid for writes. The shim catches every C++ exception.
    let message = unsafe {
        slotcon_conv2d_backward(
            grad.tensor.as_ptr().cast(),
            x.tensor.as_ptr().cast(),
            weight.tensor.as_ptr().cast(),
            stride.as_ptr(),
            padding.as_ptr(),
            dilation.as_ptr(),
            options.groups as i64,
            want[0],
            want[1],
            gi,
            gw,
        )
    };
    check("at::convolution_backward", message);
    out.map(adopt)
}

/// Panics with LibTorch's message when the shim returned one. Inside a backward pass
/// there is no error channel; the message says why (a shape or device mismatch, memory).
pub(crate) fn check(op: &str, message: *mut c_char) {
    if let Some(text) = take_message(message) {
        panic!("{op}: {text}");
    }
}

/// The message a shim function returned (null: success, `None`), released.
pub(crate) fn take_message(message: *mut c_char) -> Option<String> {
    if message.is_null() {
        return None;
    }
    // SAFETY: a non-null message is a NUL-terminated string from strdup, released once here.
    let text = unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned();
    // SAFETY: as above; the pointer is not used after this.
    unsafe { slotcon_free_message(message) };
    Some(text)
}

/// ATen's training-mode batch norm with the running statistics blended in the same call
/// (`_native_batch_norm_legit_functional`, the functional form of the in-place
/// `native_batch_norm` that `torch.nn.BatchNorm2d` runs): `[output, batch mean,
/// batch 1/sqrt(var + eps), new running mean, new running var]`. The running statistics
/// given are read, not written.
#[allow(deprecated)] // LibTorch, see above
pub fn batch_norm_forward(
    x: FloatTensor<LibTorch>,
    [gamma, beta]: [FloatTensor<LibTorch>; 2],
    [mean, var]: [FloatTensor<LibTorch>; 2],
    momentum: f64,
    eps: f64,
) -> [FloatTensor<LibTorch>; 5] {
    let (out, save_mean, invstd, mean, var) = x.tensor.internal_native_batch_norm_legit_functional(
        Some(&gamma.tensor),
        Some(&beta.tensor),
        &mean.tensor,
        &var.tensor,
        true,
        momentum,
        eps,
    );
    [out, save_mean, invstd, mean, var].map(<FloatTensor<LibTorch>>::new)
}

/// `[d x, d gamma, d beta]` of [`batch_norm_forward`] for `grad`, from its saved statistics.
#[allow(deprecated)] // LibTorch, see above
pub fn batch_norm_backward(
    [x, gamma, mean, invstd]: [&FloatTensor<LibTorch>; 4],
    eps: f64,
    grad: &FloatTensor<LibTorch>,
) -> [FloatTensor<LibTorch>; 3] {
    let mut out: [*mut c_void; 3] = [std::ptr::null_mut(); 3];
    let [gi, gw, gb] = &mut out;
    // SAFETY: the five tensor pointers are live `at::Tensor`s borrowed for the call and the
    // three out-pointers are valid for writes. The shim catches every C++ exception.
    let message = unsafe {
        slotcon_batch_norm_backward(
            grad.tensor.as_ptr().cast(),
            x.tensor.as_ptr().cast(),
            gamma.tensor.as_ptr().cast(),
            mean.tensor.as_ptr().cast(),
            invstd.tensor.as_ptr().cast(),
            eps,
            gi,
            gw,
            gb,
        )
    };
    check("at::native_batch_norm_backward", message);
    out.map(|p| adopt(p).expect("the shim returns all three gradients on success"))
}

/// `x` with NHWC strides when `channels_last`, else NCHW (`Tensor::contiguous(format)`):
/// `x` itself when it already is, or is not 4-D.
#[allow(deprecated)] // LibTorch, see above
pub fn memory_format(x: FloatTensor<LibTorch>, channels_last: bool) -> FloatTensor<LibTorch> {
    let mut out = std::ptr::null_mut();
    // SAFETY: `x` is a live `at::Tensor` borrowed for the call; the out-pointer is valid for
    // a write. The shim catches every C++ exception.
    let message = unsafe { slotcon_memory_format(x.tensor.as_ptr().cast(), channels_last, &mut out) };
    check("at::Tensor::contiguous(memory_format)", message);
    adopt(out).unwrap_or(x)
}
