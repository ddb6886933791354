//! After training: a finished SlotCon run's teacher loaded for inference ([`inference`]),
//! exported for torchvision and detectron2 ([`export`]), evaluated on COCO-Stuff-27
//! ([`segment`]: K-means + Hungarian and majority vote, mIoU, pixel accuracy) and drawn
//! ([`viz`]: prototype retrieval grid, slot overlays, curves, confusion matrices), and moved
//! to and from the official SlotCon checkpoint format ([`official`], [`official_run`]). It
//! depends on `slotcon-train`, never the reverse; binaries `slotcon-eval`,
//! `slotcon-export`, `slotcon-import` and `slotcon-viz`.
//!
//! ```
//! use slotcon_eval::segment::{Confusion, IGNORE};
//! use slotcon_eval::viz::canvas::{Canvas, WHITE};
//!
//! // Two classes, predictions mapped one to one: every labelled pixel right.
//! let mut conf = Confusion::new(2, 2);
//! conf.add(&[0, 1, 1], &[0, 1, IGNORE]);
//! let scores = conf.scores(conf.hungarian_mapping());
//! assert_eq!(scores.pixel_accuracy, 1.0);
//!
//! // Official SlotCon names, both ways.
//! use slotcon_eval::official::{official_name, our_name};
//! assert_eq!(official_name("predictor.fc1.weight").as_deref(), Some("predictor_slot.mlp.0.weight"));
//! assert_eq!(our_name("encoder_k.layer1.0.downsample.1.bias").as_deref(),
//!            Some("teacher.backbone.layer1.0.downsample.bn.bias"));
//!
//! // Pictures are drawn on an RGB canvas and written as PNG.
//! let canvas = Canvas::new(8, 8, WHITE);
//! assert_eq!(canvas.rgb.len(), 8 * 8 * 3);
//! ```

mod error;
pub mod export;
pub mod inference;
pub mod official;
pub mod official_run;
pub mod segment;
pub mod viz;

pub use error::{Error, Result};
