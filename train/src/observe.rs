//! What a training step asks of LibTorch, counted from inside it: the ATen operators
//! dispatched, by name, and the peak of the bytes its allocator holds for the step. On our
//! side [`Observer`] (LibTorch only, `native/observe.cpp`: a global RecordFunction observer
//! and a memory reporter on the calling thread); on PyTorch's, torch.profiler with
//! `profile_memory`, which uses the same two hooks (`bench/python/train_step.py
//! --observe`). Both give an [`Observation`], so `slotcon-train-bench --report` compares
//! like with like.
//!
//! An operator called inside another ATen operator (aten::conv2d calling
//! aten::convolution) counts in [`OpCount::total`]; the outermost ones, those the framework
//! dispatched, in [`OpCount::top`]. [`kind`] sorts operators into the kinds the report
//! lists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How often one operator ran in the observed step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCount {
    /// Every call, nested ones included.
    pub total: u64,
    /// Calls made while no other ATen operator ran on the thread.
    pub top: u64,
}

/// One phase of the observed step (`forward`, `backward`, ...), in bytes above those live
/// when the step began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseBytes {
    /// The phase, as [`mark`] named it.
    pub name: String,
    /// The most bytes live at once during the phase.
    pub peak_bytes: i64,
    /// The bytes live when it ended.
    pub live_bytes: i64,
}

/// One step, observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The bytes live when the step began, of those allocated under observation: with the
    /// trainer built under observation, what it holds between steps (weights, momentum,
    /// teacher; PyTorch's gradients too, which live from one backward to the next
    /// `zero_grad`).
    #[serde(default)]
    pub held_bytes: i64,
    /// The most bytes live at once during the step, above those live when it began.
    pub peak_bytes: i64,
    /// The bytes the step left live above those live when it began.
    pub retained_bytes: i64,
    /// The step's phases in order, where the step marked them ([`mark`]).
    #[serde(default)]
    pub phases: Vec<PhaseBytes>,
    /// Every ATen operator that ran, by its name (`aten::add`).
    pub ops: BTreeMap<String, OpCount>,
}

/// The kinds of operator the report lists, in its order.
pub const KINDS: [&str; 10] = [
    "convolution",
    "batch_norm",
    "matmul",
    "elementwise",
    "reduction",
    "cast_copy",
    "view",
    "allocation",
    "index_cat",
    "foreach",
];

/// The kind of an ATen operator, one of [`KINDS`] (`elementwise` for what no other names).
pub fn kind(op: &str) -> &'static str {
    let name = op.strip_prefix("aten::").unwrap_or(op);
    let base = name.trim_end_matches('_');
    let base = base.strip_prefix('_').unwrap_or(base);
    let is = |names: &[&str]| names.contains(&base);
    if name.starts_with("_foreach_") {
        "foreach"
    } else if name.contains("batch_norm") {
        "batch_norm"
    } else if name.contains("conv") {
        "convolution"
    } else if is(&["mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "einsum", "dot"]) {
        "matmul"
    } else if is(&[
        "to",
        "to_copy",
        "copy",
        "copy_from",
        "copy_from_and_resize",
        "clone",
        "contiguous",
        "type_as",
        "local_scalar_dense",
        "item",
    ]) {
        "cast_copy"
    } else if is(&[
        "view",
        "reshape",
        "reshape_alias",
        "unsafe_view",
        "permute",
        "transpose",
        "t",
        "expand",
        "expand_as",
        "slice",
        "select",
        "narrow",
        "unsqueeze",
        "squeeze",
        "as_strided",
        "flatten",
        "unflatten",
        "unbind",
        "split",
        "split_with_sizes",
        "chunk",
        "alias",
        "view_as",
        "detach",
        "movedim",
        "unfold",
        "numpy_T",
    ]) {
        "view"
    } else if is(&[
        "empty",
        "empty_like",
        "empty_strided",
        "zeros",
        "zeros_like",
        "ones",
        "ones_like",
        "full",
        "full_like",
        "fill",
        "zero",
        "new_zeros",
        "new_empty",
        "new_empty_strided",
        "new_full",
        "scalar_tensor",
        "arange",
        "lift_fresh",
        "resize",
    ]) {
        "allocation"
    } else if is(&[
        "index",
        "index_select",
        "gather",
        "scatter",
        "scatter_add",
        "cat",
        "stack",
        "index_put",
        "masked_select",
        "take",
        "where",
    ]) {
        "index_cat"
    } else if is(&[
        "sum",
        "mean",
        "max",
        "min",
        "argmax",
        "argmin",
        "amax",
        "amin",
        "norm",
        "linalg_vector_norm",
        "std",
        "var",
        "logsumexp",
        "softmax",
        "log_softmax",
        "softmax_backward_data",
        "log_softmax_backward_data",
        "prod",
        "any",
        "all",
        "cumsum",
        "topk",
        "sort",
        "std_mean",
        "var_mean",
    ]) {
        "reduction"
    } else {
        "elementwise"
    }
}

impl Observation {
    /// Operator calls in all: `(outermost, every call)`.
    pub fn calls(&self) -> (u64, u64) {
        self.ops
            .values()
            .fold((0, 0), |(top, total), c| (top + c.top, total + c.total))
    }

    /// Outermost calls by [`kind`], every kind of [`KINDS`] present (0 when none ran).
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        let mut out: BTreeMap<&'static str, u64> = KINDS.iter().map(|k| (*k, 0)).collect();
        for (name, c) in &self.ops {
            *out.entry(kind(name)).or_default() += c.top;
        }
        out
    }

    /// The most bytes live at once during the step, those held at its start included.
    pub fn peak_held_bytes(&self) -> i64 {
        self.held_bytes + self.peak_bytes
    }

    /// From the report `native/observe.cpp` writes: `held N`, `peak N`, `retained N`, then
    /// `phase NAME PEAK LIVE` and `op NAME TOTAL TOP` lines.
    fn parse(text: &str) -> Option<Observation> {
        let mut out = Observation::default();
        for line in text.lines() {
            let mut words = line.split(' ');
            match (words.next()?, words.next()?) {
                ("held", n) => out.held_bytes = n.parse().ok()?,
                ("peak", n) => out.peak_bytes = n.parse().ok()?,
                ("retained", n) => out.retained_bytes = n.parse().ok()?,
                ("phase", name) => out.phases.push(PhaseBytes {
                    name: name.to_string(),
                    peak_bytes: words.next()?.parse().ok()?,
                    live_bytes: words.next()?.parse().ok()?,
                }),
                ("op", name) => {
                    let total = words.next()?.parse().ok()?;
                    let top = words.next()?.parse().ok()?;
                    out.ops.insert(name.to_string(), OpCount { total, top });
                }
                _ => return None,
            }
        }
        Some(out)
    }
}

pub use observer::{mark, Observer};

mod observer {
    #[cfg(feature = "tch")]
    use std::ffi::{c_char, CStr};
    use std::marker::PhantomData;

    use super::Observation;
    #[cfg(feature = "tch")]
    use crate::model::torch_ops::take_message;
    use crate::{Error, Result};

    #[cfg(feature = "tch")]
    extern "C" {
        fn slotcon_observe_begin() -> *mut c_char;
        fn slotcon_observe_reset();
        fn slotcon_observe_end(report: *mut *mut c_char) -> *mut c_char;
        fn slotcon_observe_mark(name: *const c_char);
    }

    /// Ends the phase `name` of a step under observation: its peak and the bytes live at
    /// its end go in the [`Observation`](super::Observation). Nothing when no observation
    /// runs on this thread (one check in the shim), or without LibTorch.
    pub fn mark(name: &std::ffi::CStr) {
        // SAFETY: a NUL-terminated string that outlives the call; the shim copies it.
        #[cfg(feature = "tch")]
        unsafe {
            slotcon_observe_mark(name.as_ptr())
        }
        #[cfg(not(feature = "tch"))]
        let _ = name;
    }

    /// Observes LibTorch from [`Observer::begin`] to [`Observer::end`] (one at a time, on
    /// one thread: the memory reporter belongs to the thread that began). Run a step or
    /// two first, then [`Observer::reset`], then the step to measure: the bytes a step
    /// frees are seen only when they were allocated under observation.
    pub struct Observer {
        ended: bool,
        /// Not Send: the memory reporter is the beginning thread's.
        _thread: PhantomData<*const ()>,
    }

    impl Observer {
        /// Starts observing. Errs when an observation already runs, or when this build
        /// has no LibTorch.
        pub fn begin() -> Result<Observer> {
            start()?;
            Ok(Observer {
                ended: false,
                _thread: PhantomData,
            })
        }

        /// Zeroes the counts; the bytes live now become the zero of the peak.
        pub fn reset(&mut self) {
            // SAFETY: no arguments; an observation is running (self exists, not ended).
            #[cfg(feature = "tch")]
            unsafe {
                slotcon_observe_reset()
            }
        }

        /// Stops, with what was seen since the last reset (or the beginning).
        pub fn end(mut self) -> Result<Observation> {
            self.ended = true;
            finish()
        }
    }

    impl Drop for Observer {
        fn drop(&mut self) {
            if !self.ended {
                let _ = finish();
            }
        }
    }

    #[cfg(not(feature = "tch"))]
    fn start() -> Result<()> {
        Err(Error::Observe(
            "this build has no LibTorch; rebuild with `--features tch`".into(),
        ))
    }

    #[cfg(feature = "tch")]
    fn start() -> Result<()> {
        // SAFETY: no arguments; the shim catches every C++ exception.
        match take_message(unsafe { slotcon_observe_begin() }) {
            Some(reason) => Err(Error::Observe(reason)),
            None => Ok(()),
        }
    }

    #[cfg(not(feature = "tch"))]
    fn finish() -> Result<Observation> {
        Err(Error::Observe("this build has no LibTorch".into()))
    }

    #[cfg(feature = "tch")]
    fn finish() -> Result<Observation> {
        let mut report: *mut c_char = std::ptr::null_mut();
        // SAFETY: the out-pointer is valid for a write; the shim catches every exception.
        if let Some(reason) = take_message(unsafe { slotcon_observe_end(&mut report) }) {
            return Err(Error::Observe(reason));
        }
        // SAFETY: on success `report` is a NUL-terminated string from strdup.
        let text = unsafe { CStr::from_ptr(report) }.to_string_lossy().into_owned();
        // The report is released as messages are (free).
        let _ = take_message(report);
        Observation::parse(&text).ok_or_else(|| Error::Observe(format!("unreadable report: {text:.200}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_sort_the_operators_of_a_step() {
        let cases = [
            ("aten::conv2d", "convolution"),
            ("aten::convolution_backward", "convolution"),
            ("aten::native_batch_norm_backward", "batch_norm"),
            ("aten::addmm", "matmul"),
            ("aten::_to_copy", "cast_copy"),
            ("aten::copy_", "cast_copy"),
            ("aten::_reshape_alias", "view"),
            ("aten::permute", "view"),
            ("aten::zeros_like", "allocation"),
            ("aten::fill_", "allocation"),
            ("aten::cat", "index_cat"),
            ("aten::_softmax", "reduction"),
            ("aten::add_", "elementwise"),
            ("aten::threshold_backward", "elementwise"),
            ("aten::_foreach_mul_", "foreach"),
        ];
        for (op, want) in cases {
            assert_eq!(kind(op), want, "{op}");
            assert!(KINDS.contains(&want));
        }
    }

    #[test]
    fn the_shim_report_parses_and_sums() {
        let text = "held 100\npeak 4096\nretained -12\nphase forward 4000 300\nop aten::add 3 2\nop aten::conv2d 5 1\n";
        let o = Observation::parse(text).unwrap();
        assert_eq!((o.peak_bytes, o.retained_bytes, o.peak_held_bytes()), (4096, -12, 4196));
        assert_eq!(
            (
                o.phases[0].name.as_str(),
                o.phases[0].peak_bytes,
                o.phases[0].live_bytes
            ),
            ("forward", 4000, 300)
        );
        assert_eq!(o.calls(), (3, 8));
        assert_eq!(o.by_kind()["convolution"], 1);
        assert_eq!(o.by_kind()["view"], 0);
        assert!(Observation::parse("peak x\n").is_none());
    }

    #[cfg(feature = "tch")]
    #[test]
    fn the_observer_sees_libtorch_operators_and_bytes() {
        let x = tch::Tensor::ones([256, 256], (tch::Kind::Float, tch::Device::Cpu));
        let mut obs = Observer::begin().unwrap();
        assert!(Observer::begin().is_err(), "a second observation at once");
        let _warm = &x + 1.0;
        obs.reset();
        let y = (&x * 2.0).relu();
        drop(y);
        mark(c"first");
        let kept = &x + 3.0;
        mark(c"second");
        let o = obs.end().unwrap();
        let bytes = 256 * 256 * 4;
        assert!(
            (bytes..bytes + 1024).contains(&o.held_bytes),
            "_warm, live at the reset: {o:?}"
        );
        assert_eq!(o.ops["aten::mul"].top, 1, "{o:?}");
        assert_eq!(o.ops["aten::relu"].top, 1);
        assert!(!o.ops.contains_key("aten::ones"), "counted before the reset");
        // Besides the tensors, at most a few scalars' bytes.
        assert!(
            (bytes..bytes + 1024).contains(&o.retained_bytes),
            "the one tensor still live: {o:?}"
        );
        assert!(
            (2 * bytes..2 * bytes + 1024).contains(&o.peak_bytes),
            "x*2 and its relu at once: {o:?}"
        );
        let [first, second] = &o.phases[..] else {
            panic!("two phases: {o:?}")
        };
        assert_eq!((first.name.as_str(), second.name.as_str()), ("first", "second"));
        assert!((2 * bytes..2 * bytes + 1024).contains(&first.peak_bytes), "{o:?}");
        assert!(first.live_bytes < 1024, "y was dropped: {o:?}");
        assert!((bytes..bytes + 1024).contains(&second.peak_bytes), "{o:?}");
        assert_eq!(second.live_bytes, o.retained_bytes);
        drop(kept);
        mark(c"after the end");
        // Ended: a new one can begin.
        drop(Observer::begin().unwrap());
    }
}
