//! The training loop's core, shared by `tensorgrad train`, the examples and the benchmarks:
//! a [`Trainer`] holds model, loss, optimizer and schedule, and [`Trainer::fit_epoch`]
//! runs one pass over a stream of batches, reporting every step.

use super::collective::{all_reduce_gradients, shard, Collective, Local};
use super::run_dir::PartialEpoch;
use super::{Assembly, TrainError};
use crate::autograd::profile::{self, Phase};
use crate::autograd::Gradients;
use crate::loss::Loss;
use crate::nn::Module;
use crate::optim::{LrSchedule, Optimizer};
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One optimisation step, as reported to the caller of [`Trainer::fit_epoch`].
#[derive(Clone, Debug, PartialEq)]
pub struct StepEvent {
    /// Epoch, from 0.
    pub epoch: usize,
    /// Batch within the epoch, from 0.
    pub batch: usize,
    /// Images trained on so far in this epoch.
    pub images: usize,
    /// The batch's loss.
    pub loss: f64,
    /// Mean loss of the epoch's batches so far.
    pub mean_loss: f64,
    /// Learning rate of the step.
    pub lr: f64,
}

/// What one epoch of training measured.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// Mean of the batches' losses.
    pub mean_loss: f64,
    /// Images trained on.
    pub images: usize,
    /// Batches (steps).
    pub batches: usize,
    /// Wall time (seconds).
    pub seconds: f64,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Mean over the batches of the loss's focus ([`Loss::focus`]), when it has one.
    pub focus: Option<f64>,
}

/// How [`Trainer::fit_epoch_from`] ended.
#[derive(Clone, Debug, PartialEq)]
pub enum EpochEnd {
    /// Every batch was trained on.
    Complete(EpochStats),
    /// Stopped early; what was done so far.
    Stopped(PartialEpoch),
}

/// Model, loss, optimizer and schedule, and the global step count.
pub struct Trainer {
    /// The network being trained.
    pub model: Box<dyn Module<f32>>,
    /// The loss.
    pub loss: Box<dyn Loss<f32>>,
    /// The optimizer, with its state.
    pub optimizer: Box<dyn Optimizer<f32>>,
    /// The learning rate of every step.
    pub schedule: LrSchedule,
    /// Steps taken so far (over all epochs); the schedule is evaluated at it.
    pub step: usize,
    /// The ranks training together ([`Local`]: this process alone).
    pub comm: Arc<dyn Collective>,
}

impl Trainer {
    /// A trainer at step 0.
    pub fn new(assembly: Assembly, schedule: LrSchedule) -> Self {
        Trainer {
            model: assembly.model,
            loss: assembly.loss,
            optimizer: assembly.optimizer,
            schedule,
            step: 0,
            comm: Arc::new(Local),
        }
    }

    /// One step on batch `(x, y)`: forward, loss, backward, update at the schedule's rate.
    /// Returns the loss, or an error (and no update) when it is not finite.
    ///
    /// With several ranks (`comm`), `(x, y)` is the global batch: this rank trains on its
    /// shard, the loss is the mean over the whole batch, and the gradients are averaged
    /// over the batch with one all-reduce, so every rank applies the same update.
    pub fn train_step(&mut self, x: &Tensor<f32>, y: &[usize]) -> Result<f64, TrainError> {
        Ok(self.step_reporting_lr(x, y)?.0)
    }

    /// [`Trainer::train_step`], also returning the learning rate it used (the schedule is
    /// evaluated once per step, here) and the loss's focus on this batch (single rank).
    fn step_reporting_lr(
        &mut self,
        x: &Tensor<f32>,
        y: &[usize],
    ) -> Result<(f64, f64, Option<f64>), TrainError> {
        let lr = self.schedule.lr(self.step);
        let non_finite = |step: usize, loss: f64| TrainError::NonFinite {
            epoch: step / self.schedule.steps_per_epoch.max(1) + 1,
            step: step % self.schedule.steps_per_epoch.max(1),
            loss,
            kept: None,
        };
        if self.comm.size() == 1 {
            let (model, loss, optimizer) = (&mut self.model, &self.loss, &mut self.optimizer);
            let (value, focus) = on_pool_worker(|| -> Result<_, TrainError> {
                let z = model.forward(x)?;
                let l = profile::time(Phase::Forward, "loss", || loss.forward(&z, y))?;
                let value = l.item() as f64;
                if !value.is_finite() {
                    return Ok((value, None));
                }
                let focus = loss.focus(&z, y)?;
                let grads = l.backward()?;
                profile::time(Phase::Update, "optimizer", || {
                    optimizer.step(model.parameters_mut(), &grads, lr)
                })?;
                Ok((value, focus))
            })?;
            if !value.is_finite() {
                return Err(non_finite(self.step, value));
            }
            self.step += 1;
            return Ok((value, lr, focus));
        }
        let n = y.len();
        let (lo, len) = shard(n, self.comm.rank(), self.comm.size());
        let local = if len > 0 {
            let l = self.loss.forward(
                &self.model.forward(&x.narrow(0, lo, len)?)?,
                &y[lo..lo + len],
            );
            Some(l)
        } else {
            None
        };
        // Agree on failures before the next collective, so no rank waits forever.
        let failed = self.comm.any(matches!(local, Some(Err(_))));
        let l = match local {
            Some(Err(e)) => return Err(e.into()),
            _ if failed => {
                return Err(TrainError::Invalid(
                    "the step failed on another rank".into(),
                ))
            }
            Some(Ok(l)) => Some(l),
            None => None,
        };
        let mut total = [l.as_ref().map_or(0.0, |l| l.item() as f64 * len as f64)];
        self.comm.all_reduce_sum(&mut total);
        let value = total[0] / n.max(1) as f64;
        if !value.is_finite() {
            return Err(non_finite(self.step, value));
        }
        let mut grads = match l {
            Some(l) => l.backward()?,
            None => Gradients::empty(),
        };
        all_reduce_gradients(
            self.comm.as_ref(),
            &self.model,
            &mut grads,
            len as f64 / n.max(1) as f64,
        )?;
        self.optimizer
            .step(self.model.parameters_mut(), &grads, lr)?;
        self.step += 1;
        Ok((value, lr, None))
    }

    /// Trains on every batch of `batches` (epoch `epoch`, from 0), calling `on_step`
    /// after each step. Stops at the first non-finite loss with
    /// [`TrainError::NonFinite`], before that batch's update.
    ///
    /// ```
    /// use tensorgrad::data::{Augment, Batches, Dataset, Normalization};
    /// use tensorgrad::loss::LglInr;
    /// use tensorgrad::nn::models::ModelKind;
    /// use tensorgrad::optim::{LrSchedule, OptimizerKind, OptimizerSettings, Schedule};
    /// use tensorgrad::train::{Assembly, Trainer};
    ///
    /// // 64 two-pixel images: class 1 is bright, class 0 dark.
    /// let labels: Vec<usize> = (0..64).map(|i| i % 2).collect();
    /// let pixels = labels.iter().flat_map(|&l| [40 + 150 * l as u8; 2]).collect();
    /// let data = Dataset {
    ///     pixels, labels, shape: [1, 1, 2], classes: 2,
    ///     class_names: vec!["dark".into(), "bright".into()],
    /// };
    /// let norm = Normalization::of(&data);
    /// let assembly = Assembly {
    ///     model: Box::new(ModelKind::Linear.build([1, 1, 2], 2, 0)?),
    ///     loss: Box::new(LglInr::default()),
    ///     optimizer: OptimizerSettings {
    ///         kind: OptimizerKind::Sgd, momentum: 0.9, nesterov: false, weight_decay: 0.0,
    ///     }.build(),
    /// };
    /// let schedule = LrSchedule {
    ///     base: 0.5, schedule: Schedule::Constant, warmup_steps: 0,
    ///     steps_per_epoch: 8, total_steps: 80,
    /// };
    /// let mut trainer = Trainer::new(assembly, schedule);
    /// let mut losses = Vec::new();
    /// for epoch in 0..10 {
    ///     let batches = Batches::new(&data, 8, Some(0), epoch, &norm, Augment::default());
    ///     let stats = trainer.fit_epoch(batches, epoch, |_step| {})?;
    ///     losses.push(stats.mean_loss);
    /// }
    /// assert_eq!(trainer.step, 80);
    /// assert!(losses[9] < 0.5 * losses[0], "{losses:?}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fit_epoch(
        &mut self,
        batches: impl IntoIterator<Item = (Tensor<f32>, Vec<usize>)>,
        epoch: usize,
        on_step: impl FnMut(&StepEvent),
    ) -> Result<EpochStats, TrainError> {
        match self.fit_epoch_from(batches, epoch, None, &AtomicBool::new(false), on_step)? {
            EpochEnd::Complete(stats) => Ok(stats),
            EpochEnd::Stopped(_) => unreachable!("nothing sets the stop flag"),
        }
    }

    /// [`Trainer::fit_epoch`], continuing an epoch stopped earlier (`from`: its first
    /// `from.batches` batches are skipped — drawn but not trained on, so shuffling and
    /// augmentation continue exactly), and stopping after the step during which `stop`
    /// becomes true.
    pub fn fit_epoch_from(
        &mut self,
        batches: impl IntoIterator<Item = (Tensor<f32>, Vec<usize>)>,
        epoch: usize,
        from: Option<&PartialEpoch>,
        stop: &AtomicBool,
        mut on_step: impl FnMut(&StepEvent),
    ) -> Result<EpochEnd, TrainError> {
        let t0 = Instant::now();
        let start = from.cloned().unwrap_or(PartialEpoch {
            batches: 0,
            loss_sum: 0.0,
            images: 0,
            seconds: 0.0,
            focus_sum: 0.0,
            focus_batches: 0,
        });
        let (mut loss_sum, mut images, mut count) = (start.loss_sum, start.images, start.batches);
        let (mut focus_sum, mut focus_batches) = (start.focus_sum, start.focus_batches);
        // The rate of the last step taken (the schedule's at the current step for an
        // epoch without steps).
        let mut lr = None;
        for (batch, (x, y)) in batches.into_iter().enumerate().skip(start.batches) {
            // With several ranks, `y.len()` counts the global batch: images are counted
            // globally too.
            let (loss, step_lr, focus) = self.step_reporting_lr(&x, &y).map_err(|e| match e {
                TrainError::NonFinite { loss, kept, .. } => TrainError::NonFinite {
                    epoch: epoch + 1,
                    step: batch,
                    loss,
                    kept,
                },
                other => other,
            })?;
            lr = Some(step_lr);
            if let Some(f) = focus {
                focus_sum += f;
                focus_batches += 1;
            }
            loss_sum += loss;
            images += y.len();
            count += 1;
            on_step(&StepEvent {
                epoch,
                batch,
                images,
                loss,
                mean_loss: loss_sum / count as f64,
                lr: step_lr,
            });
            // Every rank stops after the same step.
            let stopping = stop.load(Ordering::SeqCst);
            let stopping = if self.comm.size() > 1 {
                self.comm.any(stopping)
            } else {
                stopping
            };
            if stopping {
                return Ok(EpochEnd::Stopped(PartialEpoch {
                    batches: count,
                    loss_sum,
                    images,
                    seconds: start.seconds + t0.elapsed().as_secs_f64(),
                    focus_sum,
                    focus_batches,
                }));
            }
        }
        Ok(EpochEnd::Complete(EpochStats {
            mean_loss: loss_sum / count.max(1) as f64,
            images,
            batches: count,
            seconds: start.seconds + t0.elapsed().as_secs_f64(),
            lr: lr.unwrap_or_else(|| self.schedule.lr(self.step)),
            focus: (focus_batches > 0).then(|| focus_sum / focus_batches as f64),
        }))
    }
}

/// Runs `f` on a worker of the current rayon pool (at once, when already on one).
///
/// Called from a thread outside the pool (a program's main thread), every parallel
/// section of every op would be injected into the pool and waited for: one cross-thread
/// hand-off per op, 2–5% of a LeNet or cifar-cnn step at 1 thread. Run on a worker, the
/// whole step makes one hand-off and its ops' parallel sections are nested calls.
pub fn on_pool_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::join(f, || ()).0
    }
}
