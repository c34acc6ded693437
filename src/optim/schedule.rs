//! Learning-rate schedules, evaluated per optimisation step, with optional linear warm-up.

use crate::text::{serde_as_text, ParseError};
use std::fmt;
use std::str::FromStr;

/// The shape of the schedule after warm-up, spelled `constant`, `cosine` or
/// `step:EVERY,GAMMA`.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine from the base rate to 0 over the remaining steps.
    Cosine,
}

impl FromStr for Schedule {
    type Err = ParseError;

    /// Parses `constant`, `cosine` or `step:EVERY,GAMMA`.
    fn from_str(spec: &str) -> Result<Self, ParseError> {
        let bad = |why: &str| ParseError::new(spec, why);
        match spec {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            _ => {
                let rest = spec
                    .strip_prefix("step:")
                    .ok_or_else(|| bad("expected constant, cosine or step:EVERY,GAMMA"))?;
                let (e, g) = rest
                    .split_once(',')
                    .ok_or_else(|| bad("expected step:EVERY,GAMMA"))?;
                let every: usize = e
                    .trim()
                    .parse()
                    .map_err(|_| bad("EVERY is not a positive integer"))?;
                let gamma: f64 = g.trim().parse().map_err(|_| bad("GAMMA is not a number"))?;
                if every == 0 || gamma.is_nan() || gamma <= 0.0 {
                    return Err(bad("EVERY must be ≥ 1 and GAMMA > 0"));
                }
                Ok(Schedule::Step { every, gamma })
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => write!(f, "constant"),
            Schedule::Cosine => write!(f, "cosine"),
            Schedule::Step { every, gamma } => write!(f, "step:{every},{gamma}"),
        }
    }
}

serde_as_text!(Schedule);

/// A schedule bound to a run's length.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    /// Base learning rate.
    pub base: f64,
    /// Shape after warm-up.
    pub schedule: Schedule,
    /// Steps of linear warm-up from `base/warmup` to `base`.
    pub warmup_steps: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Total steps of the run.
    pub total_steps: usize,
}

impl LrSchedule {
    /// The learning rate of step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match &self.schedule {
            Schedule::Constant => self.base,
            Schedule::Step { every, gamma } => {
                let epoch = step / self.steps_per_epoch.max(1);
                self.base * gamma.powi((epoch / every) as i32)
            }
            Schedule::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let t = (step - self.warmup_steps).min(span) as f64 / span as f64;
                0.5 * self.base * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(schedule: Schedule, warmup: usize) -> LrSchedule {
        LrSchedule {
            base: 0.1,
            schedule,
            warmup_steps: warmup,
            steps_per_epoch: 10,
            total_steps: 100,
        }
    }

    #[test]
    fn values() {
        let c = sched(Schedule::Constant, 0);
        assert_eq!((c.lr(0), c.lr(99)), (0.1, 0.1));
        let s = sched(Schedule::from_str("step:3,0.5").unwrap(), 0);
        assert_eq!((s.lr(29), s.lr(30), s.lr(60)), (0.1, 0.05, 0.025));
        let cos = sched(Schedule::Cosine, 0);
        assert_eq!(cos.lr(0), 0.1);
        assert!((cos.lr(50) - 0.05).abs() < 1e-15);
        assert!(cos.lr(100).abs() < 1e-15);
        let w = sched(Schedule::Cosine, 10);
        assert!((w.lr(0) - 0.01).abs() < 1e-15 && (w.lr(9) - 0.1).abs() < 1e-15);
        assert_eq!(w.lr(10), 0.1);
        assert!((w.lr(55) - 0.05).abs() < 1e-15);
    }

    #[test]
    fn bad_specs() {
        for bad in ["linear", "step:0,0.5", "step:3", "step:3,-1"] {
            assert!(
                Schedule::from_str(bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with(&format!("{bad:?}: ")),
                "{bad}"
            );
        }
        for good in ["constant", "cosine", "step:3,0.5", "step:30,0.1"] {
            let s = Schedule::from_str(good).unwrap();
            assert_eq!(s.to_string(), good);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
        }
    }
}
