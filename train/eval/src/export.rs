//! Exporting the teacher backbone (`encoder_k`, as SlotCon's conversion scripts do) for
//! PyTorch ecosystems: torchvision `state_dict` names as safetensors, or the
//! detectron2 `.pkl` that `DetectionCheckpointer` reads.

use std::borrow::Cow;
use std::path::Path;

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use safetensors::{Dtype, SafeTensors, View};

use slotcon_train::model::ResNet;

use crate::error::{Error, Result};

/// One exported tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Exported {
    /// Its name in the target ecosystem.
    pub name: String,
    /// `F32` or `I64`.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub data: Vec<u8>,
}

impl View for &Exported {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn weights_error(path: &Path, reason: String) -> Error {
    Error::Weights {
        path: path.to_path_buf(),
        reason,
    }
}

/// bfloat16 bytes to f32 bytes (exports are always f32).
pub(crate) fn bf16_to_f32(bytes: &[u8]) -> Vec<u8> {
    bytes
        .chunks_exact(2)
        .flat_map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16).to_le_bytes())
        .collect()
}

/// BatchNorm updates per step: the official code (and slotcon) runs each encoder,
/// projector and the predictor once per view, in training mode, so PyTorch's
/// `num_batches_tracked` is twice the steps.
pub const BN_UPDATES_PER_STEP: u64 = 2;

/// The backbone's tensors under torchvision's ResNet names, in f32, plus a
/// `num_batches_tracked` (`BN_UPDATES_PER_STEP` x `steps`) for every BatchNorm, as
/// `resnet50().state_dict()` has them.
pub fn torchvision_tensors(backbone: &ResNet, steps: u64) -> Result<Vec<Exported>> {
    let here = Path::new("<memory>");
    let mut store = SafetensorsStore::from_bytes(None)
        .with_to_adapter(BurnToPyTorchAdapter)
        .skip_enum_variants(true)
        .with_key_remapping(r"downsample\.conv\.", "downsample.0.")
        .with_key_remapping(r"downsample\.bn\.", "downsample.1.");
    backbone
        .save_into(&mut store)
        .map_err(|e| weights_error(here, e.to_string()))?;
    let bytes = store.get_bytes().map_err(|e| weights_error(here, e.to_string()))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| weights_error(here, e.to_string()))?;
    let mut out = Vec::new();
    for (name, view) in file.iter() {
        let data = match view.dtype() {
            Dtype::F32 => view.data().to_vec(),
            Dtype::BF16 => bf16_to_f32(view.data()),
            other => return Err(weights_error(here, format!("{name}: unexpected dtype {other:?}"))),
        };
        if let Some(bn) = name.strip_suffix(".running_mean") {
            out.push(Exported {
                name: format!("{bn}.num_batches_tracked"),
                dtype: Dtype::I64,
                shape: vec![],
                data: ((steps * BN_UPDATES_PER_STEP) as i64).to_le_bytes().to_vec(),
            });
        }
        out.push(Exported {
            name: name.to_string(),
            dtype: Dtype::F32,
            shape: view.shape().to_vec(),
            data,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A torchvision name in detectron2's ResNet: `stem.` for the stem, `res2..res5` for
/// `layer1..4`, `convN.norm` for `bnN`, `shortcut` / `shortcut.norm` for the downsample.
/// `None` for what detectron2 has no place for (`num_batches_tracked`, `fc.*`).
pub fn detectron2_name(torchvision: &str) -> Option<String> {
    if torchvision.ends_with("num_batches_tracked") || torchvision.starts_with("fc.") {
        return None;
    }
    let mut k = torchvision.to_string();
    if !k.starts_with("layer") {
        k = format!("stem.{k}");
    }
    for t in 1..=4 {
        k = k.replace(&format!("layer{t}"), &format!("res{}", t + 1));
    }
    for t in 1..=3 {
        k = k.replace(&format!("bn{t}"), &format!("conv{t}.norm"));
    }
    Some(
        k.replace("downsample.0", "shortcut")
            .replace("downsample.1", "shortcut.norm"),
    )
}

/// Writes `tensors` as safetensors at `path`, atomically (a temporary file, then a rename).
pub fn write_safetensors(tensors: &[Exported], path: &Path) -> Result<()> {
    let pairs: Vec<(&str, &Exported)> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let bytes = safetensors::serialize(pairs, None).map_err(|e| weights_error(path, e.to_string()))?;
    Ok(slotcon_shards::format::write_atomic(path, &bytes)?)
}

/// Pickles the staged safetensors (argv 1) into the detectron2 checkpoint (argv 2); built
/// into the binary so that it runs from anywhere.
const DETECTRON2_PKL: &str = include_str!("../python/detectron2_pkl.py");

/// Writes the detectron2 checkpoint `path` (a pickle of `{"model": {name: ndarray},
/// "__author__": "slotcon", "matching_heuristics": True}`): the tensors go to Python
/// (`python`, which needs numpy and safetensors) as safetensors, and
/// `python/detectron2_pkl.py` (built in) pickles them.
pub fn write_detectron2(tensors: &[Exported], path: &Path, python: &Path) -> Result<()> {
    let renamed: Vec<Exported> = tensors
        .iter()
        .filter_map(|t| detectron2_name(&t.name).map(|name| Exported { name, ..t.clone() }))
        .collect();
    let staged = path.with_file_name(format!(".detectron2-{}.safetensors", std::process::id()));
    write_safetensors(&renamed, &staged)?;
    let out = std::process::Command::new(python)
        .args(["-c", DETECTRON2_PKL])
        .arg(&staged)
        .arg(path)
        .output();
    std::fs::remove_file(&staged).ok();
    let python_err = |reason: String| Error::Python {
        python: python.to_path_buf(),
        reason,
    };
    let out = out.map_err(|e| python_err(format!("cannot run: {e}")))?;
    if !out.status.success() {
        let reason = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(python_err(format!(
            "detectron2_pkl.py failed writing {}: {reason}",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectron2_names_follow_the_conversion_convention() {
        let cases = [
            ("conv1.weight", Some("stem.conv1.weight")),
            ("bn1.running_var", Some("stem.conv1.norm.running_var")),
            ("layer1.0.conv2.weight", Some("res2.0.conv2.weight")),
            ("layer3.1.bn3.bias", Some("res4.1.conv3.norm.bias")),
            ("layer4.0.downsample.0.weight", Some("res5.0.shortcut.weight")),
            (
                "layer2.0.downsample.1.running_mean",
                Some("res3.0.shortcut.norm.running_mean"),
            ),
            ("layer1.0.bn1.num_batches_tracked", None),
            ("fc.weight", None),
        ];
        for (tv, d2) in cases {
            assert_eq!(detectron2_name(tv).as_deref(), d2, "{tv}");
        }
    }

    #[test]
    fn bf16_widens_exactly() {
        let one = 1.0f32.to_bits() >> 16;
        let bytes = (one as u16).to_le_bytes();
        assert_eq!(bf16_to_f32(&bytes), 1.0f32.to_le_bytes());
    }
}
