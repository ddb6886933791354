//! The SlotCon network (student, EMA teacher, predictor), built from a [`ModelConfig`],
//! and its safetensors form. The loss is [`super::loss`].

use std::path::Path;

use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};

use super::heads::{Grouping, Predictor, Projector};
use super::resnet::ResNet;
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Backbone, projector and prototypes: the student's or the teacher's.
#[derive(Module, Debug)]
pub struct Encoder {
    /// The ResNet up to C5.
    pub backbone: ResNet,
    /// The 1x1-conv projector.
    pub projector: Projector,
    /// Prototypes and pooling.
    pub grouping: Grouping,
}

impl Encoder {
    pub(crate) fn new(cfg: &ModelConfig, device: &Device) -> Self {
        Encoder {
            backbone: ResNet::new(cfg.arch, device),
            projector: Projector::new(cfg.arch.channels(), cfg.dim_hidden, cfg.dim_out, device),
            grouping: Grouping::new(cfg.num_prototypes, cfg.dim_out, cfg.teacher_temp, device),
        }
    }

    /// Images `[n, 3, s, s]` to (slots `[n, k, d]`, scores `[n, k, s/32, s/32]`).
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<3>, Tensor<4>) {
        self.grouping.forward(self.projector.forward(self.backbone.forward(x)))
    }
}

/// Student, teacher (an EMA copy, no gradients) and the slot predictor.
#[derive(Module, Debug)]
pub struct SlotConNet {
    /// Trained by gradients.
    pub student: Encoder,
    /// Follows the student by EMA.
    pub teacher: Encoder,
    /// Maps student slots to the teacher's space for the contrast.
    pub predictor: Predictor,
}

impl ModelConfig {
    /// A fresh network on `device`; the teacher starts with the student's parameters.
    ///
    /// The teacher is built on its own and then given the student's values, not cloned:
    /// a clone would carry the student's parameter ids, and a checkpoint and the
    /// optimiser tell the two apart by them.
    pub fn init(&self, device: &Device) -> SlotConNet {
        let student = Encoder::new(self, device);
        let predictor = Predictor::new(self.dim_out, self.dim_hidden, device);
        let teacher = crate::optim::ema_update(Encoder::new(self, device), &student, 0.0);
        SlotConNet {
            teacher,
            student,
            predictor,
        }
    }
}

impl SlotConNet {
    /// Writes every parameter and BN statistic as safetensors with PyTorch conventions
    /// (BN `weight`/`bias`, linear weights `[out, in]`), under this module's names.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let mut store = SafetensorsStore::from_file(path)
            .with_to_adapter(BurnToPyTorchAdapter)
            .skip_enum_variants(true);
        self.save_into(&mut store).map_err(|e| Error::Weights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// The same tensors as [`SlotConNet::save_safetensors`] writes, as safetensors bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let mut store = SafetensorsStore::from_bytes(None)
            .with_to_adapter(BurnToPyTorchAdapter)
            .skip_enum_variants(true);
        self.save_into(&mut store)?;
        Ok(store.get_bytes()?)
    }

    /// Loads safetensors `bytes` named and laid out as [`SlotConNet::save_safetensors`]
    /// writes them. A tensor the network has no place for, or of another shape, is an
    /// error ([`Error::Tensors`], naming the first); so is a missing one unless `partial`
    /// (then it keeps its value).
    pub fn load_safetensors(&mut self, bytes: Vec<u8>, partial: bool) -> Result<usize> {
        let mut store = SafetensorsStore::from_bytes(Some(bytes))
            .with_from_adapter(PyTorchToBurnAdapter)
            .skip_enum_variants(true)
            .allow_partial(partial);
        let result = self.load_from(&mut store)?;
        let missing: Vec<&str> = result.missing.iter().map(|(name, _)| name.as_str()).collect();
        let problems: Vec<String> = (result.errors.iter().map(|e| e.to_string()))
            .chain(
                result
                    .unused
                    .iter()
                    .map(|n| format!("{n}: no such tensor in the network")),
            )
            .chain(
                (!partial)
                    .then(|| missing.iter().map(|n| format!("{n}: missing")))
                    .into_iter()
                    .flatten(),
            )
            .collect();
        match problems.first() {
            None => Ok(result.applied.len()),
            Some(first) => Err(Error::Tensors {
                count: problems.len(),
                first: first.clone(),
            }),
        }
    }
}
