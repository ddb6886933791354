//! What a PyTorch reference needs to replay a training step of a [`Trainer`]: its
//! weights as safetensors, the batch's u8 views, and a `case.json` with the geometry and
//! the hyper-parameters (read by `bench/python/train_step.py`).

use std::path::Path;

use serde_json::json;
use slotcon_augment::TwoViewBatch;
use slotcon_shards::io_err;

use crate::align::plans;
use crate::error::Result;
use crate::trainer::Trainer;

/// Writes `dir/weights.safetensors`, `dir/views.u8` (`[2, n, s, s, 3]`) and
/// `dir/case.json` for `trainer`'s current weights and `batch`.
pub fn dump_case(trainer: &Trainer, batch: &TwoViewBatch, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    trainer.net().save_safetensors(&dir.join("weights.safetensors"))?;
    let views = [batch.views()[0], batch.views()[1]].concat();
    std::fs::write(dir.join("views.u8"), views).map_err(io_err(&dir.join("views.u8")))?;
    let cfg = &trainer.cfg;
    let (m, l, o) = (&cfg.model, &cfg.loss, &cfg.optim);
    let [p1, p2] = plans(batch, (cfg.data.image_size / 32) as usize);
    let valid: Vec<bool> = p1.valid.iter().zip(&p2.valid).map(|(a, b)| *a && *b).collect();
    let case = json!({
        "arch": m.arch.name(), "channels": m.arch.channels(), "dim_hidden": m.dim_hidden,
        "dim_out": m.dim_out, "num_prototypes": m.num_prototypes, "teacher_temp": m.teacher_temp,
        "student_temp": l.student_temp, "contrast_temp": l.contrast_temp,
        "group_loss_weight": l.group_loss_weight, "center_momentum": l.center_momentum,
        "n": batch.len(), "size": batch.size(), "boxes": batch.boxes(), "flips": batch.flips(), "valid": valid,
        "lr": cfg.lr(), "weight_decay": o.weight_decay, "eta": o.lars_eta, "momentum": o.momentum,
        "ema": o.teacher_momentum,
    });
    let path = dir.join("case.json");
    Ok(std::fs::write(&path, case.to_string()).map_err(io_err(&path))?)
}
