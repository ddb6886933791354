// LibTorch's own gradients for slotcon-train's convolutions and batch norms (see
// train/src/model/conv.rs and norm.rs).
//
// tch 0.22 binds neither `at::convolution_backward` nor `at::native_batch_norm_backward`,
// the functions PyTorch's autograd calls for these ops' gradients (oneDNN or cuDNN for the
// convolution). This file exposes them with a C ABI. Tensors cross as `at::Tensor*`, which is what tch's `C_tensor` pointers are; the
// results are heap-allocated `at::Tensor`s that tch takes ownership of (`Tensor::from_ptr`,
// freed by tch's `at_free`). A C++ exception becomes a malloc'ed message, never an unwind
// across the FFI boundary.

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>

extern "C" {

// Gradients of `conv2d(input, weight)` (no bias) for `grad_output`: the input's when
// `want_input`, the weight's when `want_weight`; the others are left null. Returns null on
// success, else an error message to release with `slotcon_free_message`.
char* slotcon_conv2d_backward(const at::Tensor* grad_output, const at::Tensor* input,
                              const at::Tensor* weight, const int64_t* stride,
                              const int64_t* padding, const int64_t* dilation,
                              int64_t groups, bool want_input, bool want_weight,
                              at::Tensor** grad_input, at::Tensor** grad_weight) {
  *grad_input = nullptr;
  *grad_weight = nullptr;
  try {
    const std::array<bool, 3> mask = {want_input, want_weight, false};
    const int64_t no_output_padding[2] = {0, 0};
    auto grads = at::convolution_backward(
        *grad_output, *input, *weight, std::nullopt, at::IntArrayRef(stride, 2),
        at::IntArrayRef(padding, 2), at::IntArrayRef(dilation, 2), /*transposed=*/false,
        at::IntArrayRef(no_output_padding, 2), groups, mask);
    if (want_input) *grad_input = new at::Tensor(std::get<0>(grads));
    if (want_weight) *grad_weight = new at::Tensor(std::get<1>(grads));
    return nullptr;
  } catch (const std::exception& e) {
    delete *grad_input;
    *grad_input = nullptr;
    return strdup(e.what());
  }
}

// Gradients of `at::native_batch_norm(input, weight, bias, training=true, eps)` for
// `grad_output`, from the batch mean and inverse standard deviation that forward saved:
// the input's, the weight's and the bias's. Returns null on success, else an error message.
char* slotcon_batch_norm_backward(const at::Tensor* grad_output, const at::Tensor* input,
                                  const at::Tensor* weight, const at::Tensor* save_mean,
                                  const at::Tensor* save_invstd, double eps,
                                  at::Tensor** grad_input, at::Tensor** grad_weight,
                                  at::Tensor** grad_bias) {
  *grad_input = *grad_weight = *grad_bias = nullptr;
  try {
    auto grads = at::native_batch_norm_backward(
        *grad_output, *input, *weight, std::nullopt, std::nullopt, *save_mean, *save_invstd,
        /*train=*/true, eps, {true, true, true});
    *grad_input = new at::Tensor(std::get<0>(grads));
    *grad_weight = new at::Tensor(std::get<1>(grads));
    *grad_bias = new at::Tensor(std::get<2>(grads));
    return nullptr;
  } catch (const std::exception& e) {
    delete *grad_input;
    delete *grad_weight;
    *grad_input = *grad_weight = nullptr;
    return strdup(e.what());
  }
}

void slotcon_free_message(char* message) { std::free(message); }

// `input` in the memory format asked for (`channels_last`: NHWC strides, else NCHW), as
// `Tensor::contiguous(memory_format)`. `*out` stays null when `input` already is, so that
// the caller keeps its own handle (burn-tch tracks who shares a storage).
char* slotcon_memory_format(const at::Tensor* input, bool channels_last, at::Tensor** out) {
  *out = nullptr;
  try {
    const auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    if (input->dim() != 4 || input->is_contiguous(format)) return nullptr;
    *out = new at::Tensor(input->contiguous(format));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

}  // extern "C"
