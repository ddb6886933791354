//! Evaluation that does not depend on the model: COCO-Stuff-27 labels, confusion
//! matrices, Hungarian and majority-vote cluster-to-class mappings, mIoU and pixel
//! accuracy, K-means, bilinear upsampling, and [`segment`], the whole unsupervised
//! segmentation evaluation behind `slotcon-eval segment`.

pub mod coco27;
pub mod hungarian;
pub mod kmeans;
pub mod metrics;
mod run;
pub mod upsample;

pub use coco27::Coco27;
pub use metrics::{Confusion, Scores, IGNORE};
pub use run::{labelled_pairs, read_mask, segment, SegmentOptions, SegmentReport};
