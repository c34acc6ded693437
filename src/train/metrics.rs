//! Classification metrics: accuracy, per-class and balanced accuracy, confusion matrix and
//! the class-averaged probability matrix `p̄`.

use crate::loss::audit::class_average;
use serde::{Deserialize, Serialize};

/// Metrics of a model on one data set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean loss per batch.
    pub loss: f64,
    /// Fraction of correct predictions.
    pub accuracy: f64,
    /// Mean of the per-class accuracies over classes that have samples.
    pub balanced_accuracy: f64,
    /// Recall of every class (`NaN`-free: 0 for classes without samples).
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// Class-averaged probabilities `p̄_jk` (rows: true class, columns: output).
    pub p_bar: Vec<Vec<f64>>,
    /// Samples per class.
    pub counts: Vec<usize>,
}

/// The predicted class of every row of logits `[N, outputs]` (one output: `z > 0`).
pub fn predictions(logits: &[f32], outputs: usize) -> Vec<usize> {
    logits
        .chunks(outputs)
        .map(|row| {
            if outputs == 1 {
                usize::from(row[0] > 0.0)
            } else {
                let mut best = 0;
                for (k, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = k;
                    }
                }
                best
            }
        })
        .collect()
}

/// Metrics from predictions, probabilities `[N, outputs]` and labels.
pub fn evaluation(
    preds: &[usize],
    probs: &[f64],
    outputs: usize,
    labels: &[usize],
    classes: usize,
    loss: f64,
) -> Evaluation {
    let mut confusion = vec![vec![0usize; classes]; classes];
    for (&p, &l) in preds.iter().zip(labels) {
        confusion[l][p] += 1;
    }
    let counts: Vec<usize> = confusion.iter().map(|r| r.iter().sum()).collect();
    let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
    let per_class: Vec<f64> = (0..classes)
        .map(|c| {
            if counts[c] == 0 {
                0.0
            } else {
                confusion[c][c] as f64 / counts[c] as f64
            }
        })
        .collect();
    let present: Vec<f64> = (0..classes)
        .filter(|&c| counts[c] > 0)
        .map(|c| per_class[c])
        .collect();
    let p_bar = class_average(probs, outputs, labels)
        .map(|(_, p)| p)
        .unwrap_or_default();
    Evaluation {
        loss,
        accuracy: correct as f64 / labels.len().max(1) as f64,
        balanced_accuracy: present.iter().sum::<f64>() / present.len().max(1) as f64,
        per_class_accuracy: per_class,
        confusion,
        p_bar,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_by_hand() {
        let logits = [2.0, 1.0, 0.0, 0.0, 3.0, 1.0, 0.5, 0.1, 0.2, 0.0, 0.0, 9.0];
        let preds = predictions(&logits, 3);
        assert_eq!(preds, vec![0, 1, 0, 2]);
        let labels = [0, 1, 1, 1];
        let probs = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let e = evaluation(&preds, &probs, 3, &labels, 3, 0.5);
        assert_eq!(e.accuracy, 0.5);
        assert_eq!(e.per_class_accuracy, vec![1.0, 1.0 / 3.0, 0.0]);
        assert!((e.balanced_accuracy - (1.0 + 1.0 / 3.0) / 2.0).abs() < 1e-15);
        assert_eq!(
            e.confusion,
            vec![vec![1, 0, 0], vec![1, 1, 1], vec![0, 0, 0]]
        );
        assert!((e.p_bar[1][0] - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(predictions(&[0.3, -0.2], 1), vec![1, 0]);
    }
}
