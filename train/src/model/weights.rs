//! Loading torchvision-layout weights (safetensors) into the backbone.

use std::path::Path;

use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};

use super::resnet::{torchvision_key_remapping, ResNet};
use crate::error::{Error, Result};

/// What a load matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors loaded.
    pub applied: usize,
    /// Tensors in the file that the module has no place for (e.g. `fc.*`).
    pub unused: Vec<String>,
}

/// Loads a torchvision ResNet `state_dict` saved as safetensors (names such as
/// `layer1.0.conv1.weight`, `bn1.running_mean`) into `model`. Every module tensor must
/// be in the file; extra tensors (the classifier, `num_batches_tracked`) are reported.
pub fn load_torchvision(model: &mut ResNet, path: &Path) -> Result<LoadReport> {
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .skip_enum_variants(true)
        .allow_partial(true);
    for (from, to) in torchvision_key_remapping() {
        store = store.with_key_remapping(from, to);
    }
    let bad = |reason: String| Error::Weights {
        path: path.to_path_buf(),
        reason,
    };
    let result = model.load_from(&mut store).map_err(|e| bad(e.to_string()))?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        let missing: Vec<&str> = result.missing.iter().map(|(name, _)| name.as_str()).collect();
        let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        return Err(bad(format!(
            "missing [{}], errors [{}]",
            missing.join(", "),
            errors.join("; ")
        )));
    }
    Ok(LoadReport {
        applied: result.applied.len(),
        unused: result.unused,
    })
}
