//! Compute devices by name: `flex`, `libtorch`, `libtorch-cuda:N`.

use std::str::FromStr;

use burn::prelude::Device;

use crate::error::{Error, ParseError, Result};

/// A device named on a command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// Burn's pure-Rust CPU backend.
    Flex,
    /// LibTorch on the CPU (needs the `tch` feature).
    Libtorch,
    /// LibTorch on CUDA device N (needs the `tch` feature).
    LibtorchCuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = ParseError;

    fn from_str(s: &str) -> std::result::Result<Self, ParseError> {
        let choice = match s {
            "flex" => DeviceChoice::Flex,
            "libtorch" => DeviceChoice::Libtorch,
            // One GPU per process: the one a launcher gave this process.
            "libtorch-cuda" => DeviceChoice::LibtorchCuda(local_rank()),
            _ => match s.strip_prefix("libtorch-cuda:").map(str::parse) {
                Some(Ok(n)) => DeviceChoice::LibtorchCuda(n),
                _ => {
                    return Err(ParseError::Unknown {
                        what: "device",
                        name: s.to_string(),
                        accepted: "flex, libtorch, libtorch-cuda:N, or libtorch-cuda for $LOCAL_RANK",
                    })
                }
            },
        };
        if choice != DeviceChoice::Flex && !cfg!(feature = "tch") {
            return Err(ParseError::NoLibtorch { name: s.to_string() });
        }
        Ok(choice)
    }
}

/// Whether `device` (autodiff or not) is one of LibTorch's.
pub fn is_libtorch(device: &Device) -> bool {
    #[cfg(feature = "tch")]
    return matches!(
        device.clone().inner().as_dispatch(),
        burn::backend::DispatchDevice::LibTorch(_)
    );
    #[cfg(not(feature = "tch"))]
    {
        let _ = device;
        false
    }
}

/// Whether `device` (autodiff or not) is a LibTorch CUDA device.
pub fn is_cuda(device: &Device) -> bool {
    #[cfg(feature = "tch")]
    #[allow(deprecated)] // burn-tch's LibTorchDevice, the LibTorch path DESIGN §7 asks for
    return matches!(
        device.clone().inner().as_dispatch(),
        burn::backend::DispatchDevice::LibTorch(burn::backend::libtorch::LibTorchDevice::Cuda(_))
    );
    #[cfg(not(feature = "tch"))]
    {
        let _ = device;
        false
    }
}

/// `$LOCAL_RANK` (torchrun's GPU of this process), 0 when unset or not a number.
fn local_rank() -> usize {
    std::env::var("LOCAL_RANK")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Flex => write!(f, "flex"),
            DeviceChoice::Libtorch => write!(f, "libtorch"),
            DeviceChoice::LibtorchCuda(n) => write!(f, "libtorch-cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// The autodiff device. Its tensors are f32 (the master copy); a bf16 run computes its
    /// convolutions and matmuls in bf16 through [`crate::amp::autocast`].
    pub fn autodiff(self) -> Result<Device> {
        Ok(self.inference()?.autodiff())
    }

    /// Whether this is a CUDA device.
    pub fn is_cuda(self) -> bool {
        matches!(self, DeviceChoice::LibtorchCuda(_))
    }

    /// Checks that this build and this machine can provide the device, before any
    /// tensor is made on it: `libtorch-cuda:N` needs CUDA device N to be visible to
    /// LibTorch (otherwise LibTorch aborts with a C++ backtrace at the first tensor).
    pub fn check(self) -> Result<()> {
        match self.unavailable() {
            None => Ok(()),
            Some(reason) => Err(Error::Device {
                device: self.to_string(),
                reason,
            }),
        }
    }

    /// Why this build or machine cannot provide the device (see [`DeviceChoice::check`]),
    /// or `None` when it can.
    pub fn unavailable(self) -> Option<String> {
        match self {
            DeviceChoice::Flex => None,
            #[cfg(feature = "tch")]
            DeviceChoice::Libtorch => None,
            #[cfg(feature = "tch")]
            DeviceChoice::LibtorchCuda(n) => match cuda_devices() {
                0 => Some(
                    "LibTorch sees no CUDA device (no GPU or driver here, or a CPU-only PyTorch); \
                     use libtorch or flex"
                        .into(),
                ),
                count if n >= count => Some(format!(
                    "LibTorch sees {count} CUDA device(s): libtorch-cuda:0 to libtorch-cuda:{}",
                    count - 1
                )),
                _ => None,
            },
            #[cfg(not(feature = "tch"))]
            DeviceChoice::Libtorch | DeviceChoice::LibtorchCuda(_) => {
                Some("this build has no LibTorch (build with --features tch)".into())
            }
        }
    }

    /// The device without autodiff (BatchNorm uses its running statistics there).
    #[allow(deprecated)] // burn-tch is deprecated upstream but is the LibTorch path DESIGN §7 asks for
    pub fn inference(self) -> Result<Device> {
        self.check()?;
        let base = match self {
            DeviceChoice::Flex => Device::flex(),
            #[cfg(feature = "tch")]
            DeviceChoice::Libtorch => Device::libtorch(),
            #[cfg(feature = "tch")]
            DeviceChoice::LibtorchCuda(n) => Device::libtorch_cuda(n),
            #[cfg(not(feature = "tch"))]
            DeviceChoice::Libtorch | DeviceChoice::LibtorchCuda(_) => {
                return Err(Error::Device {
                    device: self.to_string(),
                    reason: "this build has no LibTorch (build with --features tch)".into(),
                })
            }
        };
        Ok(base)
    }
}

/// CUDA devices LibTorch can use (`torch.cuda.device_count()`; 0 without a GPU, a driver,
/// or a CUDA build of LibTorch).
#[cfg(feature = "tch")]
#[allow(deprecated)] // burn-tch, see `inference`
fn cuda_devices() -> usize {
    use burn::backend::{Backend, LibTorch};
    // Type id 0 is LibTorch's CUDA device type (burn-tch's `DeviceId`).
    <LibTorch as Backend>::device_count(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!("flex".parse::<DeviceChoice>(), Ok(DeviceChoice::Flex));
        let e = "gpu".parse::<DeviceChoice>().unwrap_err();
        assert!(e.to_string().starts_with("unknown device \"gpu\" (flex, "), "{e}");
        if cfg!(feature = "tch") {
            assert_eq!("libtorch-cuda:1".parse(), Ok(DeviceChoice::LibtorchCuda(1)));
            // No machine has this many GPUs: a clear error, not LibTorch's abort.
            let e = DeviceChoice::LibtorchCuda(1 << 20).inference().unwrap_err();
            assert!(e.to_string().starts_with("libtorch-cuda:1048576: LibTorch sees"), "{e}");
        } else {
            let e = "libtorch".parse::<DeviceChoice>().unwrap_err();
            assert_eq!(
                e,
                ParseError::NoLibtorch {
                    name: "libtorch".into()
                }
            );
            assert!(e.to_string().contains("--features tch"), "{e}");
        }
    }
}
