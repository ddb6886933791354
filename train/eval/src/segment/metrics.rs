//! Unsupervised segmentation scores: a confusion matrix of clusters against classes,
//! the two ways of turning clusters into classes (Hungarian matching and majority
//! vote), mean IoU and pixel accuracy.

use serde::Serialize;

use super::hungarian::max_score_assignment;

/// Label value that is ignored (COCO's "unlabeled", id 0, maps to it).
pub const IGNORE: u16 = u16::MAX;

/// Counts of (cluster, class) pairs over labelled pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confusion {
    /// Number of clusters (rows).
    pub clusters: usize,
    /// Number of classes (columns).
    pub classes: usize,
    /// `counts[cluster * classes + class]`.
    pub counts: Vec<u64>,
}

/// Scores of one clustering after mapping clusters to classes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scores {
    /// Mean IoU over the classes that occur (in the labels or the predictions).
    pub miou: f64,
    /// Fraction of labelled pixels whose mapped cluster is their class.
    pub pixel_accuracy: f64,
    /// IoU of each class (NaN for classes that occur nowhere).
    pub iou: Vec<f64>,
    /// The class each cluster was mapped to.
    pub mapping: Vec<usize>,
}

impl Confusion {
    /// An empty matrix.
    pub fn new(clusters: usize, classes: usize) -> Self {
        Confusion {
            clusters,
            classes,
            counts: vec![0; clusters * classes],
        }
    }

    /// Adds one image: `pred[i]` is a cluster, `label[i]` a class or [`IGNORE`].
    pub fn add(&mut self, pred: &[u16], label: &[u16]) {
        assert_eq!(pred.len(), label.len(), "prediction and label sizes differ");
        for (&p, &l) in pred.iter().zip(label) {
            if l != IGNORE {
                self.counts[p as usize * self.classes + l as usize] += 1;
            }
        }
    }

    /// Each cluster mapped to the class it overlaps most (majority vote).
    pub fn majority_mapping(&self) -> Vec<usize> {
        (0..self.clusters)
            .map(|k| {
                let row = &self.counts[k * self.classes..(k + 1) * self.classes];
                (0..self.classes)
                    .max_by_key(|&c| (row[c], std::cmp::Reverse(c)))
                    .unwrap_or(0)
            })
            .collect()
    }

    /// A one-to-one mapping maximising the matched pixels (needs clusters == classes).
    pub fn hungarian_mapping(&self) -> Vec<usize> {
        assert_eq!(
            self.clusters, self.classes,
            "Hungarian matching needs as many clusters as classes"
        );
        let score: Vec<f64> = self.counts.iter().map(|&c| c as f64).collect();
        max_score_assignment(&score, self.classes)
    }

    /// Class-by-class confusion after mapping clusters to classes (`[label][pred]`).
    pub fn mapped(&self, mapping: &[usize]) -> Vec<u64> {
        let n = self.classes;
        let mut m = vec![0u64; n * n];
        for k in 0..self.clusters {
            for c in 0..n {
                m[c * n + mapping[k]] += self.counts[k * n + c];
            }
        }
        m
    }

    /// mIoU and pixel accuracy under `mapping`.
    pub fn scores(&self, mapping: Vec<usize>) -> Scores {
        let n = self.classes;
        let m = self.mapped(&mapping);
        let total: u64 = m.iter().sum();
        let correct: u64 = (0..n).map(|c| m[c * n + c]).sum();
        let iou: Vec<f64> = (0..n)
            .map(|c| {
                let tp = m[c * n + c] as f64;
                let label: u64 = m[c * n..(c + 1) * n].iter().sum();
                let pred: u64 = (0..n).map(|r| m[r * n + c]).sum();
                let union = label as f64 + pred as f64 - tp;
                if union > 0.0 {
                    tp / union
                } else {
                    f64::NAN
                }
            })
            .collect();
        let present: Vec<f64> = iou.iter().copied().filter(|v| !v.is_nan()).collect();
        let miou = if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        };
        Scores {
            miou,
            pixel_accuracy: if total > 0 { correct as f64 / total as f64 } else { 0.0 },
            iou,
            mapping,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<u16> {
        // 4 classes in blocks, plus ignored pixels.
        let mut l: Vec<u16> = (0..400).map(|i| (i / 100) as u16).collect();
        l[5] = IGNORE;
        l[250] = IGNORE;
        l
    }

    #[test]
    fn a_perfect_prediction_scores_one() {
        let l = labels();
        let pred: Vec<u16> = l.iter().map(|&v| if v == IGNORE { 0 } else { v }).collect();
        let mut c = Confusion::new(4, 4);
        c.add(&pred, &l);
        let s = c.scores(c.hungarian_mapping());
        assert_eq!((s.miou, s.pixel_accuracy), (1.0, 1.0));
    }

    #[test]
    fn hungarian_recovers_a_permutation() {
        let l = labels();
        let perm = [2u16, 0, 3, 1];
        let pred: Vec<u16> = l
            .iter()
            .map(|&v| if v == IGNORE { 1 } else { perm[v as usize] })
            .collect();
        let mut c = Confusion::new(4, 4);
        c.add(&pred, &l);
        let s = c.scores(c.hungarian_mapping());
        assert_eq!((s.miou, s.pixel_accuracy), (1.0, 1.0));
        assert_eq!(s.mapping, vec![1, 3, 0, 2]);
        // Without matching, the same prediction scores zero.
        assert_eq!(c.scores(vec![0, 1, 2, 3]).pixel_accuracy, 0.0);
    }

    #[test]
    fn a_constant_prediction_scores_the_majority_share() {
        let l = labels();
        let pred = vec![0u16; l.len()];
        let mut c = Confusion::new(4, 4);
        c.add(&pred, &l);
        let s = c.scores(c.majority_mapping());
        // The cluster goes to class 1 (100 labelled pixels of 398; ties go to the lower
        // class): IoU 100/398, the other classes 0.
        assert_eq!(s.mapping[0], 1);
        assert!((s.pixel_accuracy - 100.0 / 398.0).abs() < 1e-12);
        assert!((s.miou - (100.0 / 398.0) / 4.0).abs() < 1e-12, "{s:?}");
    }
}
