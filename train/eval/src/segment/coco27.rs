//! COCO-Stuff-27: the 27 coarse classes of the COCO panoptic categories (their
//! `supercategory`), as unsupervised segmentation papers (PiCIE, SlotCon) evaluate.

use std::collections::HashMap;
use std::path::Path;

use slotcon_shards::io_err;

use crate::error::{Error, Result};

use super::metrics::IGNORE;

/// The mapping from COCO panoptic category ids to the 27 coarse classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coco27 {
    /// Class names, in order of first appearance by category id (things first).
    pub classes: Vec<String>,
    by_id: HashMap<u32, u16>,
}

impl Coco27 {
    /// Reads the `categories` of a COCO panoptic JSON (e.g. `panoptic_train2017.json`).
    pub fn from_panoptic_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let bad = |reason: String| Error::Data {
            path: path.into(),
            reason,
        };
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let cats = json["categories"]
            .as_array()
            .ok_or_else(|| bad("no \"categories\" list".into()))?;
        let mut pairs: Vec<(u32, String)> = Vec::new();
        for c in cats {
            let id = c["id"]
                .as_u64()
                .ok_or_else(|| bad(format!("category without an id: {c}")))?;
            let sup = c["supercategory"]
                .as_str()
                .ok_or_else(|| bad(format!("category {id} has no supercategory")))?;
            pairs.push((id as u32, sup.to_string()));
        }
        Ok(Self::from_categories(pairs))
    }

    /// Builds the mapping from `(category id, supercategory)` pairs.
    pub fn from_categories(mut pairs: Vec<(u32, String)>) -> Self {
        pairs.sort_by_key(|(id, _)| *id);
        let mut classes: Vec<String> = Vec::new();
        let mut by_id = HashMap::new();
        for (id, sup) in pairs {
            let class = match classes.iter().position(|c| *c == sup) {
                Some(i) => i,
                None => {
                    classes.push(sup);
                    classes.len() - 1
                }
            };
            by_id.insert(id, class as u16);
        }
        Coco27 { classes, by_id }
    }

    /// The coarse class of a panoptic category id; 0 (unlabeled) and unknown ids are
    /// [`IGNORE`].
    pub fn class_of(&self, category_id: u32) -> u16 {
        self.by_id.get(&category_id).copied().unwrap_or(IGNORE)
    }

    /// Maps a mask of category ids to coarse classes in place of a new vector.
    pub fn map_mask(&self, mask: &[u8]) -> Vec<u16> {
        let table: Vec<u16> = (0..256u32).map(|id| self.class_of(id)).collect();
        mask.iter().map(|&id| table[id as usize]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supercategories_become_classes_in_id_order() {
        let pairs = vec![
            (3, "vehicle".into()),
            (1, "person".into()),
            (2, "vehicle".into()),
            (200, "sky".into()),
        ];
        let m = Coco27::from_categories(pairs);
        assert_eq!(m.classes, ["person", "vehicle", "sky"]);
        assert_eq!(m.map_mask(&[0, 1, 2, 3, 200, 77]), [IGNORE, 0, 1, 1, 2, IGNORE]);
    }
}
