//! Compute devices by name: `flex`, `libtorch`, `libtorch-cuda:N`, in a chosen precision.

use std::str::FromStr;

use burn::prelude::Device;

use crate::config::Precision;
use crate::error::{Error, Result};

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
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let choice = match s {
            "flex" => DeviceChoice::Flex,
            "libtorch" => DeviceChoice::Libtorch,
            _ => match s.strip_prefix("libtorch-cuda:").map(str::parse) {
                Some(Ok(n)) => DeviceChoice::LibtorchCuda(n),
                _ => return Err(format!("unknown device {s:?} (flex, libtorch, libtorch-cuda:N)")),
            },
        };
        if choice != DeviceChoice::Flex && !cfg!(feature = "tch") {
            return Err(format!(
                "{s}: this build has no LibTorch; rebuild with `cargo build --release --features tch`"
            ));
        }
        Ok(choice)
    }
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
    /// The autodiff device, computing in `precision`. Call it before any tensor exists on
    /// that device: the float type of a device is fixed by its first tensor.
    pub fn autodiff(self, precision: Precision) -> Result<Device> {
        Ok(self.inference(precision)?.autodiff())
    }

    /// The device without autodiff (BatchNorm uses its running statistics there).
    #[allow(deprecated)] // burn-tch is deprecated upstream but is the LibTorch path DESIGN §7 asks for
    pub fn inference(self, precision: Precision) -> Result<Device> {
        let mut base = match self {
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
        if precision != Precision::F32 {
            base.configure(precision.dtype()).map_err(|e| Error::Device {
                device: self.to_string(),
                reason: format!("cannot compute in {precision}: {e}"),
            })?;
        }
        Ok(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!("flex".parse::<DeviceChoice>(), Ok(DeviceChoice::Flex));
        assert!("gpu".parse::<DeviceChoice>().unwrap_err().contains("unknown device"));
        if cfg!(feature = "tch") {
            assert_eq!("libtorch-cuda:1".parse(), Ok(DeviceChoice::LibtorchCuda(1)));
        } else {
            assert!("libtorch"
                .parse::<DeviceChoice>()
                .unwrap_err()
                .contains("--features tch"));
        }
    }
}
