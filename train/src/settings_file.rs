//! Settings files: a TOML (or JSON) file of [`TrainConfig`] fields laid over a preset,
//! and the resolved settings written back as TOML (`slotcon-train --print-config`).
//!
//! A file may give any subset of the fields, under the names `config.json` uses. A name
//! this version does not know is refused (a typo is never ignored), as is a value of the
//! wrong type or out of its range, each error naming the field.

use std::path::Path;

use serde_json::{Map, Value};

use crate::config::{InvalidField, TrainConfig};
use crate::error::{Error, Result};

/// The largest settings file read.
const MAX_SETTINGS_FILE: u64 = 1 << 20;

/// Why a settings file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file does not parse as TOML.
    #[error("not a TOML file: {0}")]
    Toml(#[from] toml::de::Error),
    /// The file (named `.json`) does not parse as a JSON object.
    #[error("not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
    /// A name that is not a setting.
    #[error("`{key}` is not a setting (the settings are: {known})")]
    Unknown {
        /// The name as the file spells it.
        key: String,
        /// Every setting's name.
        known: String,
    },
    /// A value of the wrong type.
    #[error("`{key}`: {source}")]
    Value {
        /// The setting.
        key: String,
        /// What serde found wrong.
        source: serde_json::Error,
    },
    /// A value out of its range.
    #[error(transparent)]
    Range(#[from] InvalidField),
    /// A seed above 2^63 - 1, which TOML's integers cannot hold.
    #[error("seed {0} cannot be written as TOML (its integers stop at 2^63 - 1); a JSON settings file can hold it")]
    SeedNotToml(u64),
    /// Settings TOML cannot hold.
    #[error("cannot be written as TOML ({0})")]
    NotToml(#[from] toml::ser::Error),
}

impl TrainConfig {
    /// `self` with the settings in `path` laid over it: TOML, or JSON when the name ends
    /// in `.json` (a `config.json` of an earlier run is such a file). The result is
    /// checked ([`TrainConfig::check`]).
    pub fn with_file(self, path: &Path) -> Result<Self> {
        let bytes = slotcon_shards::read_bounded(path, MAX_SETTINGS_FILE)?;
        let text = String::from_utf8_lossy(&bytes);
        self.with_text(&text, is_json(path)).map_err(|source| Error::Settings {
            path: path.to_path_buf(),
            source,
        })
    }

    fn with_text(self, text: &str, json: bool) -> std::result::Result<Self, SettingsError> {
        let given: Map<String, Value> = if json {
            serde_json::from_str(text)?
        } else {
            serde_json::to_value(toml::from_str::<toml::Table>(text)?)?
                .as_object()
                .cloned()
                .unwrap_or_default()
        };
        let base = serde_json::to_value(&self).expect("a config serialises");
        let mut merged = base.as_object().cloned().expect("a config is an object");
        for (key, value) in given {
            if !merged.contains_key(&key) {
                let known = merged.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(SettingsError::Unknown { key, known });
            }
            // One field at a time, so that a wrong type names its field.
            let mut one = base.as_object().cloned().expect("a config is an object");
            one.insert(key.clone(), value.clone());
            if let Err(source) = serde_json::from_value::<TrainConfig>(Value::Object(one)) {
                return Err(SettingsError::Value { key, source });
            }
            merged.insert(key, value);
        }
        let cfg: TrainConfig = serde_json::from_value(Value::Object(merged))?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Every setting as TOML, in `config.json`'s order: a file [`with_file`](Self::with_file)
    /// reads back to the same settings. Refused for a seed above 2^63 - 1, which TOML's
    /// integers cannot hold.
    pub fn to_toml(&self) -> std::result::Result<String, SettingsError> {
        if i64::try_from(self.seed).is_err() {
            return Err(SettingsError::SeedNotToml(self.seed));
        }
        Ok(toml::to_string(self)?)
    }
}

fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_overrides_only_its_fields() {
        let cfg = TrainConfig::tiny()
            .with_text("epochs = 3\nbase_lr = 0.5\n", false)
            .unwrap();
        let mut want = TrainConfig::tiny();
        (want.epochs, want.optim.base_lr) = (3, 0.5);
        assert_eq!(cfg, want);
    }

    #[test]
    fn toml_round_trips_every_preset() {
        for cfg in [TrainConfig::tiny(), TrainConfig::coco_r50_800ep()] {
            let back = TrainConfig::tiny().with_text(&cfg.to_toml().unwrap(), false).unwrap();
            assert_eq!(back, cfg);
        }
    }

    /// A run's `config.json` as versions before the nested settings wrote it (flat, in
    /// the old order): it loads, as a run's config and as a settings file.
    #[test]
    fn a_config_json_of_an_earlier_version_still_loads() {
        let old = r#"{"arch": "resnet18", "dim_hidden": 512, "dim_out": 64, "num_prototypes": 64,
            "teacher_momentum": 0.99, "teacher_temp": 0.07, "student_temp": 0.1,
            "group_loss_weight": 0.5, "center_momentum": 0.9, "contrast_temp": 0.2,
            "batch_size": 16, "optimizer": "lars", "base_lr": 1.0, "weight_decay": 1e-05,
            "lars_eta": 0.001, "momentum": 0.9, "warmup_epochs": 1.0, "warmup_multiplier": 100.0,
            "min_lr": 1e-06, "epochs": 20, "image_size": 96, "min_scale": 0.08, "seed": 3,
            "save_every_epochs": 5}"#;
        let want = TrainConfig::tiny().with_seed(3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, old).unwrap();
        assert_eq!(TrainConfig::load(&path).unwrap(), want);
        assert_eq!(TrainConfig::coco_r50_800ep().with_text(old, true).unwrap(), want);
    }

    #[test]
    fn a_json_config_of_a_run_reads_as_a_settings_file() {
        let cfg = TrainConfig::coco_r50_800ep().with_seed(7);
        let json = serde_json::to_string_pretty(&cfg).unwrap();
        assert_eq!(TrainConfig::tiny().with_text(&json, true).unwrap(), cfg);
    }

    #[test]
    fn unknown_names_wrong_types_and_ranges_name_the_field() {
        let err = |text: &str| TrainConfig::tiny().with_text(text, false).unwrap_err().to_string();
        let unknown = err("batchsize = 8");
        assert!(
            unknown.contains("`batchsize` is not a setting") && unknown.contains("batch_size"),
            "{unknown}"
        );
        let typed = err("batch_size = \"eight\"");
        assert!(typed.starts_with("`batch_size`:"), "{typed}");
        let arch = err("arch = \"vit\"");
        assert!(arch.starts_with("`arch`:"), "{arch}");
        let range = err("batch_size = 0");
        assert!(range.starts_with("batch_size 0: must be in 1..=65536"), "{range}");
        assert!(err("epochs = ").starts_with("not a TOML file"));
    }

    #[test]
    fn a_seed_toml_cannot_hold_is_an_error_not_a_panic() {
        let cfg = TrainConfig::tiny().with_seed(u64::MAX);
        assert!(cfg.to_toml().unwrap_err().to_string().contains("JSON"));
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(TrainConfig::tiny().with_text(&json, true).unwrap().seed, u64::MAX);
    }
}
