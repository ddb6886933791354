// PyTorch's c10d for slotcon-train: a process group made from torchrun's environment, the
// four collectives the trainer uses, and SyncBatchNorm's two reductions (see
// train/src/dist/).
//
// The group is c10d's own: a TCPStore for the rendezvous (rank 0 hosts it, or torchrun's
// agent does), ProcessGroupGloo for CPU tensors (and CUDA tensors through host memory), and
// ProcessGroupNCCL for CUDA tensors when this file is compiled with SLOTCON_NCCL. Every
// collective blocks until it is done or fails; a failure (a lost peer, a timeout) comes back
// as a message, never as an unwind across the C ABI. Tensors cross as `at::Tensor*` (tch's
// `C_tensor`); results are fresh `new at::Tensor`s that tch owns. Inputs are never written.

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef SLOTCON_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <vector>

struct SlotconGroup {
  c10::intrusive_ptr<c10d::Backend> backend;
  // A store connection of its own for the heartbeats, so that they never wait behind the
  // process group's use of the store.
  c10::intrusive_ptr<c10d::Store> beats;
  bool host_copies;  // Gloo: CUDA tensors are reduced in host memory.
  int rank;
  int world;
};

namespace {

// The exception's message, without the C++ backtrace that c10's errors carry.
char* message(const std::exception& e) {
  if (auto c10 = dynamic_cast<const c10::Error*>(&e)) return strdup(c10->what_without_backtrace());
  return strdup(e.what());
}

// A connection to the store at host:port (its server too when `server`); with `world`, it
// counts itself in and waits until `world` such connections have (the rendezvous).
c10::intrusive_ptr<c10d::Store> connect(const char* host, int port, std::optional<int> world,
                                        bool server, std::chrono::milliseconds timeout,
                                        const std::string& prefix) {
  c10d::TCPStoreOptions opts;
  opts.port = static_cast<std::uint16_t>(port);
  opts.isServer = server;
  if (world) opts.numWorkers = *world;
  opts.waitWorkers = world.has_value();
  opts.timeout = timeout;
  opts.multiTenant = true;
  auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
  return c10::make_intrusive<c10d::PrefixStore>(prefix, tcp);
}

c10::intrusive_ptr<c10d::Backend> gloo_group(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                       int world, std::chrono::milliseconds timeout) {
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  opts->devices.push_back(ifname && *ifname
                              ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                              : c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, opts);
}

c10::intrusive_ptr<c10d::Backend> nccl_group(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                       int world, std::chrono::milliseconds timeout) {
#ifdef SLOTCON_NCCL
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
#else
  (void)store, (void)rank, (void)world, (void)timeout;
  throw std::runtime_error(
      "this build has no NCCL (its PyTorch had no CUDA, or nccl.h was not found); use gloo");
#endif
}

// A dense copy of `t` that the backend can work on in place: in host memory for Gloo.
at::Tensor staged(const SlotconGroup* g, const at::Tensor& t) {
  if (g->host_copies && !t.is_cpu()) return t.to(at::kCPU).contiguous();
  return t.clone(at::MemoryFormat::Contiguous);
}

void all_reduce_in_place(const SlotconGroup* g, at::Tensor& t) {
  std::vector<at::Tensor> ts{t};
  g->backend->allreduce(ts)->wait();
}

// The reduction dimensions of a batch norm over [n, c, ...]: all but 1.
std::vector<int64_t> reduced_dims(const at::Tensor& x) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

// `[c]` as `[1, c, 1, ...]` to broadcast against `x`.
at::Tensor per_channel(const at::Tensor& v, const at::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = v.size(0);
  return v.view(shape);
}

// The type the batch-norm statistics of `x` are kept in: f32 for a half-precision `x` (under
// autocast, with f32 weights, as cuDNN's and ATen's batch norms keep them), else x's own.
at::ScalarType stat_type(const at::Tensor& x) {
  const auto t = x.scalar_type();
  return t == at::kBFloat16 || t == at::kHalf ? at::kFloat : t;
}

}  // namespace

extern "C" {

// Joins the group of `world` processes as `rank`: rank 0 hosts the rendezvous store at
// host:port unless `agent_store` (torchrun's agent hosts it), every key under `prefix`.
// `backend` is "gloo" or "nccl". Returns null on success, else a message.
char* slotcon_dist_init(const char* backend, const char* host, int port, int rank, int world,
                        bool agent_store, const char* prefix, int64_t timeout_ms,
                        SlotconGroup** out) {
  *out = nullptr;
  try {
    const std::chrono::milliseconds timeout(timeout_ms);
    const bool server = rank == 0 && !agent_store;
    auto store = connect(host, port, world, server, timeout, std::string(prefix) + "/pg");
    auto beats = connect(host, port, std::nullopt, false, timeout, std::string(prefix) + "/beat");
    const bool is_gloo = std::strcmp(backend, "gloo") == 0;
    auto pg = is_gloo ? gloo_group(store, rank, world, timeout)
                      : nccl_group(store, rank, world, timeout);
    *out = new SlotconGroup{pg, beats, is_gloo, rank, world};
    return nullptr;
  } catch (const std::exception& e) {
    return message(e);
  }
}

// The sum over ranks of `in`, as a new tensor on `in`'s device.
char* slotcon_dist_all_reduce(const SlotconGroup* g, const at::Tensor* in, at::Tensor** out) {
  *out = nullptr;
  try {
    auto t = staged(g, *in);
    all_reduce_in_place(g, t);
    *out = new at::Tensor(t.to(in->device()));
    return nullptr;
  } catch (const std::exception& e) {
    return message(e);
  }
}

// Every rank's `in` (same shape on every rank), concatenated along dim 0 in rank order.
char* slotcon_dist_all_gather(const SlotconGroup* g, const at::Tensor* in, at::Tensor** out) {
  *out = nullptr;
  try {
    auto t = staged(g, *in);
    std::vector<std::vector<at::Tensor>> parts(1);
    for (int r = 0; r < g->world; ++r) parts[0].push_back(at::empty_like(t));
    std::vector<at::Tensor> ins{t};
    g->backend->allgather(parts, ins)->wait();
    *out = new at::Tensor(at::cat(parts[0], 0).to(in->device()));
    return nullptr;
  } catch (const std::exception& e) {
    return message(e);
  }
}

// Rank `root`'s `in`, on every rank.
char* slotcon_dist_broadcast(const SlotconGroup* g, const at::Tensor* in, int root,
                             at::Tensor** out) {
  *out = nullptr;
  try {
    std::vector<at::Tensor> ts{staged(g, *in)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    g->backend->broadcast(ts, opts)->wait();
    *out = new at::Tensor(ts[0].to(in->device()));
    return nullptr;
  } catch (const std::exception& e) {
    return message(e);
  }
}

char* slotcon_dist_barrier(const SlotconGroup* g) {
  try {
    g->backend->barrier()->wait();
    return nullptr;
  } catch (const std::exception& e) {
    return message(e);
  }
}

// Adds one to this rank's heartbeat counter in the store.
char* slotcon_dist_beat(const SlotconGroup* g) {
  try {
    g->beats->add("rank" + std::to_string(g->rank), 1);
    return nullptr;
  } catch (const std::exception& e) {
    return message(e);
  }
}

// Every rank's heartbeat counter, into `counts[world]`.
char* slotcon_dist_beats(const SlotconGroup* g, int64_t* counts) {
  try {
    for (int r = 0; r < g->world; ++r) counts[r] = g->beats->add("rank" + std::to_string(r), 0);
    return nullptr;
  } catch (const std::exception& e) {
    return message(e);
  }
}

// SyncBatchNorm's forward in training mode: the statistics of `x` [n, c, ...] over every
// rank's batch (per-rank mean and sum of squared deviations gathered and combined in f64,
// as Chan et al.), then the normalisation. Out: the output (in x's type), the global mean,
// 1/sqrt(var + eps) (both in `stat_type`) and the global count of values per channel.
char* slotcon_sync_batch_norm_forward(const SlotconGroup* g, const at::Tensor* x,
                                      const at::Tensor* weight, const at::Tensor* bias,
                                      double eps, at::Tensor** output, at::Tensor** mean,
                                      at::Tensor** invstd, int64_t* count) {
  *output = *mean = *invstd = nullptr;
  try {
    const auto dims = reduced_dims(*x);
    const auto st = stat_type(*x);
    const int64_t n = x->size(1) == 0 ? 0 : x->numel() / x->size(1);
    auto local = at::zeros({3, x->size(1)}, x->options().dtype(at::kDouble));
    if (n > 0) {
      auto [var, mu] = at::var_mean(x->to(st), dims, /*correction=*/0, /*keepdim=*/false);
      local[0].copy_(mu);
      local[1].copy_(var.to(at::kDouble) * static_cast<double>(n));
      local[2].fill_(static_cast<double>(n));
    }
    at::Tensor all;
    {
      at::Tensor* gathered = nullptr;
      if (char* e = slotcon_dist_all_gather(g, &local, &gathered)) return e;
      all = std::move(*gathered).view({g->world, 3, x->size(1)});
      delete gathered;
    }
    auto counts = all.select(1, 2);
    auto total = counts.sum(0);
    auto mu = (all.select(1, 0) * counts).sum(0) / total;
    auto dev = all.select(1, 0) - mu;
    auto m2 = (all.select(1, 1) + counts * dev * dev).sum(0);
    auto var = m2 / total;
    *count = static_cast<int64_t>(total[0].item<double>());
    auto mean_x = mu.to(st);
    auto var_x = var.to(st);
    auto out = std::get<0>(at::native_batch_norm(*x, *weight, *bias, mean_x, var_x,
                                                 /*training=*/false, 0.0, eps));
    *output = new at::Tensor(out);
    *mean = new at::Tensor(mean_x);
    *invstd = new at::Tensor((var + eps).rsqrt().to(st));
    return nullptr;
  } catch (const std::exception& e) {
    delete *output;
    delete *mean;
    *output = *mean = nullptr;
    return message(e);
  }
}

// SyncBatchNorm's backward: the sums of dy and dy·(x − mean) over every rank's batch
// (all-reduced), then this rank's input gradient. The weight's and the bias's gradients are
// this rank's share (the gradient all-reduce adds the ranks' shares). A half-precision
// input and output gradient are computed with in f32; the input gradient is in x's type.
char* slotcon_sync_batch_norm_backward(const SlotconGroup* g, const at::Tensor* grad,
                                       const at::Tensor* x, const at::Tensor* weight,
                                       const at::Tensor* mean, const at::Tensor* invstd,
                                       int64_t count, at::Tensor** grad_input,
                                       at::Tensor** grad_weight, at::Tensor** grad_bias) {
  *grad_input = *grad_weight = *grad_bias = nullptr;
  try {
    const auto dims = reduced_dims(*x);
    const auto st = stat_type(*x);
    const auto dy = grad->to(st);
    auto xmu = x->to(st) - per_channel(*mean, *x);
    auto sum_dy = dy.sum(dims);
    auto sum_dy_xmu = (dy * xmu).sum(dims);
    auto gw = sum_dy_xmu * *invstd;
    auto sums = staged(g, at::stack({sum_dy, sum_dy_xmu}));
    all_reduce_in_place(g, sums);
    sums = sums.to(x->device()) / static_cast<double>(count);
    auto scale = *invstd * *invstd * sums[1];
    auto gi = ((dy - per_channel(sums[0], *x) - xmu * per_channel(scale, *x)) *
               per_channel(*invstd * *weight, *x))
                  .to(x->scalar_type());
    *grad_input = new at::Tensor(gi);
    *grad_weight = new at::Tensor(gw);
    *grad_bias = new at::Tensor(sum_dy);
    return nullptr;
  } catch (const std::exception& e) {
    delete *grad_input;
    delete *grad_weight;
    *grad_input = *grad_weight = nullptr;
    return message(e);
  }
}

void slotcon_dist_free(SlotconGroup* g) { delete g; }

}  // extern "C"
