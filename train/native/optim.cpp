// LibTorch's arithmetic for slotcon-train's parameter updates (train/src/optim): one
// parameter's LARS (or SGD) step, one parameter's teacher EMA and fp16's unscale of all
// the gradients, each as the few ATen calls the reference makes, where Burn's generic ops
// take twice as many (a broadcast scalar, a reshape, a matmul for a norm). Tensors cross as `at::Tensor*` (tch's
// `C_tensor`); results are fresh heap `at::Tensor`s that tch takes ownership of, and the
// inputs are never written. A C++ exception becomes a malloc'ed message (released with
// `slotcon_free_message`, native/backward.cpp), never an unwind across the FFI boundary.

#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <vector>

extern "C" {

// `m·teacher + (1 − m)·student`: the reference's `teacher.mul_(m).add_(student,
// alpha=1 − m)`, out of place (the same kernels, so the same bits).
char* slotcon_ema(const at::Tensor* teacher, const at::Tensor* student, double momentum,
                  at::Tensor** out) {
  *out = nullptr;
  try {
    auto next = at::mul(*teacher, momentum);
    next.add_(*student, 1.0 - momentum);
    *out = new at::Tensor(std::move(next));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

// One step of LARS as SlotCon's reference (Barlow Twins') takes it, for `param` with
// gradient `grad` and momentum buffer `velocity` (null on the first step):
//   decay:  g ← g + wd·p                          (`grad.add(p, alpha=wd)`)
//   trust:  g ← g·q, q = η‖p‖/‖g‖ where both norms are > 0, else 1
//   v ← m·v + g (v ← g on the first step);  p ← p − lr·v  (`p.add_(v, alpha=-lr)`)
// Writes the new parameter and buffer. The trust ratio stays on the device: no host read.
char* slotcon_lars(const at::Tensor* param, const at::Tensor* grad, const at::Tensor* velocity,
                   double lr, double weight_decay, double eta, double momentum, bool decay,
                   bool trust, at::Tensor** param_out, at::Tensor** velocity_out) {
  *param_out = *velocity_out = nullptr;
  try {
    at::Tensor g = decay ? at::add(*grad, *param, weight_decay) : *grad;
    if (trust) {
      // Both norms in one call; `min(‖p‖, ‖g‖) > 0` is false for a zero and for a NaN, as
      // the reference's two nested `where`s are.
      auto norms = at::_foreach_norm(at::TensorList{*param, g});
      auto q = at::mul(norms[0], eta).div_(norms[1]);
      q = at::where(at::minimum(norms[0], norms[1]).gt(0.0), q, 1.0);
      g = decay ? g.mul_(q) : at::mul(g, q);
    }
    at::Tensor v = velocity == nullptr ? g : at::mul(*velocity, momentum).add_(g);
    *param_out = new at::Tensor(at::add(*param, v, -lr));
    *velocity_out = new at::Tensor(std::move(v));
    return nullptr;
  } catch (const std::exception& e) {
    delete *param_out;
    *param_out = nullptr;
    return strdup(e.what());
  }
}

// GradScaler's unscale of `n` gradients: `out[i] = grads[i] · inv_scale`, and `found_inf`,
// a one-element f32 tensor, 1 when any result holds an inf or a NaN, else 0. The products
// are `_foreach_mul`'s (fresh tensors, so a gradient shared by two parameters is never
// scaled twice), checked by the kernel `torch.amp.GradScaler.unscale_` runs,
// `_amp_foreach_non_finite_check_and_unscale_`, with a scale of 1.
char* slotcon_unscale(const at::Tensor* const* grads, size_t n, float inv_scale,
                      at::Tensor** out, at::Tensor** found_inf) {
  for (size_t i = 0; i < n; ++i) out[i] = nullptr;
  *found_inf = nullptr;
  try {
    std::vector<at::Tensor> list;
    list.reserve(n);
    for (size_t i = 0; i < n; ++i) list.push_back(*grads[i]);
    auto options = list.empty() ? at::TensorOptions().dtype(at::kFloat)
                                : list[0].options().dtype(at::kFloat);
    auto found = at::zeros({1}, options);
    if (!list.empty()) {
      auto scaled = at::_foreach_mul(list, static_cast<double>(inv_scale));
      at::_amp_foreach_non_finite_check_and_unscale_(scaled, found, at::ones({1}, options));
      for (size_t i = 0; i < n; ++i) out[i] = new at::Tensor(std::move(scaled[i]));
    }
    *found_inf = new at::Tensor(std::move(found));
    return nullptr;
  } catch (const std::exception& e) {
    for (size_t i = 0; i < n; ++i) {
      delete out[i];
      out[i] = nullptr;
    }
    return strdup(e.what());
  }
}

}  // extern "C"
