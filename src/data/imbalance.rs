//! Imbalanced training sets from balanced ones (docs/EXPERIMENTS.md): a binary pair with a
//! chosen ratio, and a long-tailed exponential profile. Deterministic per seed; test sets
//! keep every image of the classes involved.

use super::{DataError, Dataset, Split};
use crate::text::{serde_as_text, ParseError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::fmt;
use std::str::FromStr;

/// An imbalance profile, spelled `none`, `pair:POS,NEG,RATIO` or `longtail:RATIO`.
#[derive(Clone, Debug, PartialEq)]
pub enum Imbalance {
    /// The data set as it is.
    None,
    /// Binary: `positive` vs `negative` class, keeping all negatives and
    /// `round(n_neg / ratio)` positives. Labels become 1 (positive) and 0 (negative).
    Pair {
        /// Original label of the positive class.
        positive: usize,
        /// Original label of the negative class.
        negative: usize,
        /// `n_neg / n_pos`.
        ratio: f64,
    },
    /// `n_k = ⌊n_head · ρ^{−k/(K−1)}⌋` in label order; the head size `n_head` is the smallest
    /// class count of the original set (the most every class can supply).
    LongTail {
        /// `ρ = n_0 / n_{K−1}`.
        ratio: f64,
    },
}

impl FromStr for Imbalance {
    type Err = ParseError;

    /// Parses `none`, `pair:POS,NEG,RATIO` or `longtail:RATIO`.
    fn from_str(spec: &str) -> Result<Self, ParseError> {
        let bad = |why: &str| ParseError::new(spec, why);
        if spec == "none" {
            return Ok(Imbalance::None);
        }
        if let Some(rest) = spec.strip_prefix("pair:") {
            let parts: Vec<&str> = rest.split(',').collect();
            let [p, n, r] = parts[..] else {
                return Err(bad("expected pair:POS,NEG,RATIO"));
            };
            let positive = p
                .trim()
                .parse()
                .map_err(|_| bad("POS is not a class index"))?;
            let negative = n
                .trim()
                .parse()
                .map_err(|_| bad("NEG is not a class index"))?;
            let ratio: f64 = r.trim().parse().map_err(|_| bad("RATIO is not a number"))?;
            if positive == negative || ratio.is_nan() || ratio < 1.0 {
                return Err(bad("POS and NEG must differ and RATIO must be ≥ 1"));
            }
            return Ok(Imbalance::Pair {
                positive,
                negative,
                ratio,
            });
        }
        if let Some(r) = spec.strip_prefix("longtail:") {
            let ratio: f64 = r.trim().parse().map_err(|_| bad("RATIO is not a number"))?;
            if ratio.is_nan() || ratio < 1.0 {
                return Err(bad("RATIO must be ≥ 1"));
            }
            return Ok(Imbalance::LongTail { ratio });
        }
        Err(bad("expected none, pair:POS,NEG,RATIO or longtail:RATIO"))
    }
}

impl fmt::Display for Imbalance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Imbalance::None => write!(f, "none"),
            Imbalance::Pair {
                positive,
                negative,
                ratio,
            } => write!(f, "pair:{positive},{negative},{ratio}"),
            Imbalance::LongTail { ratio } => write!(f, "longtail:{ratio}"),
        }
    }
}

serde_as_text!(Imbalance);

impl Imbalance {
    /// Applies the profile to `split` with `seed` (which images of a class are kept).
    pub fn apply(&self, split: &Split, seed: u64) -> Result<Split, DataError> {
        let mut rng = StdRng::seed_from_u64(seed);
        let by_class = |d: &Dataset, c: usize| -> Vec<usize> {
            (0..d.len()).filter(|&i| d.labels[i] == c).collect()
        };
        match *self {
            Imbalance::None => Ok(split.clone()),
            Imbalance::Pair {
                positive,
                negative,
                ratio,
            } => {
                let k = split.train.classes;
                if positive >= k || negative >= k {
                    return Err(DataError::Imbalance(format!(
                        "{self}: class index out of range for {k} classes"
                    )));
                }
                let negs = by_class(&split.train, negative);
                let mut pos = by_class(&split.train, positive);
                for (class, members) in [(positive, &pos), (negative, &negs)] {
                    if members.is_empty() {
                        return Err(DataError::Imbalance(format!(
                            "{self}: class {class} has no training image"
                        )));
                    }
                }
                pos.shuffle(&mut rng);
                let keep = ((negs.len() as f64 / ratio).round() as usize).clamp(1, pos.len());
                pos.truncate(keep);
                pos.sort_unstable();
                let relabel = |d: &Dataset, idx: Vec<usize>| {
                    let mut sub = d.subset(&idx);
                    sub.labels = sub
                        .labels
                        .iter()
                        .map(|&l| usize::from(l == positive))
                        .collect();
                    sub.classes = 2;
                    sub.class_names = vec![
                        d.class_names[negative].clone(),
                        d.class_names[positive].clone(),
                    ];
                    sub
                };
                let mut train_idx: Vec<usize> = negs.into_iter().chain(pos).collect();
                train_idx.sort_unstable();
                let test_idx: Vec<usize> = (0..split.test.len())
                    .filter(|&i| {
                        split.test.labels[i] == positive || split.test.labels[i] == negative
                    })
                    .collect();
                Ok(Split {
                    train: relabel(&split.train, train_idx),
                    test: relabel(&split.test, test_idx),
                })
            }
            Imbalance::LongTail { ratio } => {
                let k = split.train.classes;
                let counts = split.train.class_counts();
                if let Some(empty) = counts.iter().position(|&n| n == 0) {
                    return Err(DataError::Imbalance(format!(
                        "{self}: class {empty} has no training image (the profile starts from the smallest class)"
                    )));
                }
                let n_head = *counts.iter().min().unwrap_or(&0);
                let mut keep = Vec::new();
                for c in 0..k {
                    let exponent = if k > 1 {
                        c as f64 / (k - 1) as f64
                    } else {
                        0.0
                    };
                    let n_c = ((n_head as f64 * ratio.powf(-exponent)).floor() as usize).max(1);
                    let mut idx = by_class(&split.train, c);
                    idx.shuffle(&mut rng);
                    idx.truncate(n_c);
                    keep.extend(idx);
                }
                keep.sort_unstable();
                Ok(Split {
                    train: split.train.subset(&keep),
                    test: split.test.clone(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::numbered_classes;

    fn balanced(per_class: usize, classes: usize) -> Split {
        let labels: Vec<usize> = (0..per_class * classes).map(|i| i % classes).collect();
        let d = Dataset {
            pixels: (0..labels.len()).map(|i| i as u8).collect(),
            labels,
            shape: [1, 1, 1],
            classes,
            class_names: numbered_classes(classes),
        };
        Split {
            train: d.clone(),
            test: d,
        }
    }

    #[test]
    fn pair_keeps_all_negatives_and_the_ratio() {
        let s = balanced(200, 10);
        let p = Imbalance::from_str("pair:4,9,10")
            .unwrap()
            .apply(&s, 0)
            .unwrap();
        assert_eq!(p.train.class_counts(), vec![200, 20]);
        assert_eq!(p.train.class_names, vec!["9", "4"]);
        assert_eq!(p.test.class_counts(), vec![200, 200]);
        let again = Imbalance::from_str("pair:4,9,10")
            .unwrap()
            .apply(&s, 0)
            .unwrap();
        assert_eq!(p.train.pixels, again.train.pixels, "deterministic per seed");
        let other = Imbalance::from_str("pair:4,9,10")
            .unwrap()
            .apply(&s, 1)
            .unwrap();
        assert_ne!(p.train.pixels, other.train.pixels);
    }

    #[test]
    fn longtail_follows_the_exponential_profile() {
        let mut s = balanced(1000, 10);
        // Make class 3 the smallest: n_head = 900.
        let drop: Vec<usize> = (0..s.train.len())
            .filter(|&i| !(s.train.labels[i] == 3 && i >= 9000))
            .collect();
        s.train = s.train.subset(&drop);
        let lt = Imbalance::from_str("longtail:100")
            .unwrap()
            .apply(&s, 0)
            .unwrap();
        let want: Vec<usize> = (0..10)
            .map(|k| (900.0 * 100f64.powf(-(k as f64) / 9.0)).floor() as usize)
            .collect();
        assert_eq!(lt.train.class_counts(), want);
        assert_eq!((want[0], want[9]), (900, 9));
        assert_eq!(lt.test.len(), 10000);
    }

    #[test]
    fn bad_specs() {
        for bad in [
            "pair:4,4,10",
            "pair:4,9",
            "pair:4,9,0.5",
            "longtail:x",
            "tail:10",
        ] {
            assert!(
                Imbalance::from_str(bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with(&format!("{bad:?}: ")),
                "{bad}"
            );
        }
        for good in ["none", "pair:4,9,10", "pair:0,1,2.5", "longtail:100"] {
            let spec = Imbalance::from_str(good).unwrap();
            assert_eq!(spec.to_string(), good);
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(serde_json::from_str::<Imbalance>(&json).unwrap(), spec);
        }
        assert!(Imbalance::from_str("pair:4,12,10")
            .unwrap()
            .apply(&balanced(5, 10), 0)
            .unwrap_err()
            .to_string()
            .contains("pair:4,12,10: class index out of range for 10 classes"));
        // A class without training images: an error, not a panic or a silent shrink.
        let mut holes = balanced(5, 10);
        holes.train = holes.train.subset(
            &(0..holes.train.len())
                .filter(|&i| holes.train.labels[i] != 4)
                .collect::<Vec<_>>(),
        );
        for spec in ["pair:4,9,10", "pair:9,4,10", "longtail:10"] {
            let e = Imbalance::from_str(spec)
                .unwrap()
                .apply(&holes, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains("class 4 has no training image"), "{spec}: {e}");
        }
    }
}
