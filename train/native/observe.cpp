// What one training step asks of LibTorch, counted from inside LibTorch (see
// train/src/observe.rs): every ATen operator dispatched, through a global RecordFunction
// observer (`at::addGlobalCallback`, the hook torch.profiler uses), and the bytes its CPU
// allocator hands out and takes back, through a `c10::MemoryReportingInfoBase` pushed on
// the calling thread (the hook torch.profiler's `profile_memory` uses).
//
// An operator called while another ATen operator runs on the same thread (aten::conv2d
// calling aten::convolution) counts in `total`; only the outermost in `top`, which is what
// the framework itself dispatched. One observation at a time; the C ABI, and a C++
// exception becomes a malloc'ed message, as in backward.cpp.

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <c10/core/Allocator.h>
#include <c10/util/ThreadLocalDebugInfo.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct Counts {
  int64_t total = 0;
  int64_t top = 0;
};

std::mutex mutex;
std::map<std::string, Counts> counts;
thread_local int depth = 0;

bool is_aten(const char* name) { return std::strncmp(name, "aten::", 6) == 0; }

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  const char* name = fn.name();
  if (!is_aten(name)) return nullptr;
  {
    std::lock_guard<std::mutex> guard(mutex);
    auto& c = counts[name];
    c.total += 1;
    if (depth == 0) c.top += 1;
  }
  depth += 1;
  return nullptr;
}

void on_exit(const at::RecordFunction& fn, at::ObserverContext*) {
  if (is_aten(fn.name()) && depth > 0) depth -= 1;
}

// One phase of the step, between two marks: its peak and the bytes live at its end, both
// above those live at the reset.
struct Phase {
  std::string name;
  int64_t peak;
  int64_t live;
};

// Live bytes since the observation began (only what was allocated inside it is ever
// reported freed), their peak since the last reset, and since the last mark: of the CPU's
// allocator until a CUDA allocation is seen, then of CUDA's only (a GPU step's tensors; its
// host-side scalars are not what decides the batch that fits).
struct Memory : c10::MemoryReportingInfoBase {
  int64_t live = 0;
  int64_t start = 0;
  int64_t peak = 0;
  int64_t phase_peak = 0;
  bool cuda = false;
  std::vector<Phase> phases;
  void reportMemoryUsage(void*, int64_t alloc_size, size_t, size_t, c10::Device device) override {
    if (device.is_cuda() && !cuda) {
      cuda = true;
      live = start = peak = phase_peak = 0;
      phases.clear();
    }
    if (device.is_cuda() != cuda) return;
    live += alloc_size;
    if (live > peak) peak = live;
    if (live > phase_peak) phase_peak = live;
  }
  bool memoryProfilingEnabled() const override { return true; }
};

std::shared_ptr<Memory> memory;
at::CallbackHandle handle = 0;

}  // namespace

extern "C" {

// Starts observing: the operator observer for every thread, the memory reporter for this
// one. Returns null, or an error message for `slotcon_free_message`.
char* slotcon_observe_begin() {
  try {
    if (handle != 0) return strdup("an observation is already running");
    counts.clear();
    depth = 0;
    memory = std::make_shared<Memory>();
    c10::ThreadLocalDebugInfo::_push(c10::DebugInfoKind::PROFILER_STATE, memory);
    handle = at::addGlobalCallback(
        at::RecordFunctionCallback(on_enter, on_exit).scopes({at::RecordScope::FUNCTION}));
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

// Zeroes the counts and makes the live bytes now the zero of the peak.
void slotcon_observe_reset() {
  std::lock_guard<std::mutex> guard(mutex);
  counts.clear();
  if (memory) {
    memory->start = memory->peak = memory->phase_peak = memory->live;
    memory->phases.clear();
  }
}

// Ends the phase `name` of the step (the part since the reset or the previous mark): its
// peak and the bytes live now go in the report. Nothing when no observation runs, or on
// another thread than the one that began.
void slotcon_observe_mark(const char* name) {
  if (!memory || handle == 0 || name == nullptr) return;
  if (c10::ThreadLocalDebugInfo::get(c10::DebugInfoKind::PROFILER_STATE) != memory.get()) return;
  try {
    memory->phases.push_back({name, memory->phase_peak - memory->start, memory->live - memory->start});
    memory->phase_peak = memory->live;
  } catch (const std::exception&) {
    // A report without this phase: the step goes on.
  }
}

// Stops observing, on the thread that began. `*report` gets a malloc'ed text:
// "held BYTES\npeak BYTES\nretained BYTES\n", then "phase NAME PEAK LIVE\n" per mark, then
// "op NAME TOTAL TOP\n" per operator, where held is the bytes live at the reset (of those
// allocated under observation), peak the most bytes live above those, and retained those
// still live at the end.
char* slotcon_observe_end(char** report) {
  *report = nullptr;
  try {
    if (handle == 0) return strdup("no observation is running");
    at::removeCallback(handle);
    handle = 0;
    c10::ThreadLocalDebugInfo::_pop(c10::DebugInfoKind::PROFILER_STATE);
    std::ostringstream out;
    out << "held " << memory->start << "\n";
    out << "peak " << memory->peak - memory->start << "\n";
    out << "retained " << memory->live - memory->start << "\n";
    for (const auto& p : memory->phases) out << "phase " << p.name << " " << p.peak << " " << p.live << "\n";
    std::lock_guard<std::mutex> guard(mutex);
    for (const auto& [name, c] : counts) out << "op " << name << " " << c.total << " " << c.top << "\n";
    memory.reset();
    *report = strdup(out.str().c_str());
    return nullptr;
  } catch (const std::exception& e) {
    return strdup(e.what());
  }
}

}  // extern "C"
