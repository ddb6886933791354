//! Evaluation that does not depend on the model: COCO-Stuff-27 labels, confusion
//! matrices, Hungarian and majority-vote cluster-to-class mappings, mIoU and pixel
//! accuracy (issue 6 builds `slotcon-eval segment` on these).

pub mod coco27;
pub mod hungarian;
pub mod metrics;

pub use coco27::Coco27;
pub use metrics::{Confusion, Scores, IGNORE};
