//! `tensorgrad reproduce e0|e0b|e1|e2|e3|e4|all`: the paper's experiments as one command,
//! with the progress of the runs on stderr.

use clap::builder::TypedValueParser;
use clap::Args;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;
use tensorgrad::reproduce::{Experiment, ReproduceConfig, ReproduceEvent};

/// The options of `tensorgrad reproduce`.
#[derive(Args, Clone, Debug)]
pub struct ReproduceArgs {
    /// e0, e0b, lr-sweep, e1, e2, e3, e4, e5 or all.
    pub experiment: String,
    /// Seeds of every configuration (E5 trains the first three, the sweep the first).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4")]
    pub seeds: Vec<u64>,
    /// Small data and 2 epochs: the whole protocol in minutes (a smoke test, not a result).
    #[arg(long)]
    pub quick: bool,
    /// Results folder.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Worker threads of each run (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024).map(|n| n as usize))]
    pub threads: Option<usize>,
    /// Runs trained side by side (on 2 cores, `--jobs 2 --threads 1` is the fastest).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64).map(|n| n as usize))]
    pub jobs: usize,
    /// CIFAR-10 folder (binary batches), for E4.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// MNIST folder [default: the bundled one].
    #[arg(long)]
    pub mnist_dir: Option<PathBuf>,
    /// Train and report although the results hold runs of other binary revisions (the
    /// report says so); without it that is an error.
    #[arg(long)]
    pub allow_mixed_revisions: bool,
    /// Train the runs and fit E0 only; analyse and report later (the same command without
    /// this flag).
    #[arg(long)]
    pub train_only: bool,
}

impl ReproduceArgs {
    /// The library's configuration; a bad experiment name or seed list names its flag.
    pub fn to_config(&self) -> Result<ReproduceConfig, super::FlagError> {
        let all = self.experiment == "all";
        let experiments = if all {
            Experiment::ALL.to_vec()
        } else {
            vec![self
                .experiment
                .parse::<Experiment>()
                .map_err(|e| super::FlagError {
                    flag: "EXPERIMENT".into(),
                    reason: e.to_string(),
                })?]
        };
        if self.seeds.is_empty() {
            return Err(super::FlagError {
                flag: "--seeds".into(),
                reason: "give at least one seed".into(),
            });
        }
        Ok(ReproduceConfig {
            experiments,
            all,
            seeds: self.seeds.clone(),
            quick: self.quick,
            out: self.out.clone(),
            threads: self.threads,
            jobs: self.jobs,
            mnist_dir: self.mnist_dir.clone().unwrap_or_else(super::bundled_mnist),
            cifar_dir: self.data_dir.clone(),
            command: std::env::args().collect(),
            allow_mixed_revisions: self.allow_mixed_revisions,
            train_only: self.train_only,
        })
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Prints a reproduction's progress on stderr, one line per event that matters.
pub struct ReproduceConsole {
    started: Instant,
    lock: Mutex<()>,
}

impl Default for ReproduceConsole {
    fn default() -> Self {
        ReproduceConsole {
            started: Instant::now(),
            lock: Mutex::new(()),
        }
    }
}

impl ReproduceConsole {
    /// Prints `event`.
    pub fn on_event(&self, event: &ReproduceEvent) {
        let _guard = self.lock.lock();
        let at = duration(self.started.elapsed().as_secs_f64());
        let name = |r: &tensorgrad::reproduce::PlannedRun| {
            format!(
                "{}/{}",
                r.experiment,
                r.dir()
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned())
            )
        };
        match event {
            ReproduceEvent::RunStarted {
                run,
                left,
                eta_seconds,
                resumed,
            } => eprintln!(
                "[{at}] {} {} ({} runs left in this stage{})",
                if *resumed { "resuming" } else { "training" },
                name(run),
                left,
                eta_seconds.map_or(String::new(), |s| format!(", ETA {}", duration(s)))
            ),
            ReproduceEvent::Epoch {
                run,
                epoch,
                train_loss,
                test_accuracy,
            } => eprintln!(
                "[{at}]   {} epoch {epoch}/{}: loss {train_loss:.4}, test accuracy {:.2}%",
                name(run),
                run.config.epochs,
                100.0 * test_accuracy
            ),
            ReproduceEvent::RunTrained { run, seconds } => {
                eprintln!("[{at}] trained {} in {}", name(run), duration(*seconds))
            }
            ReproduceEvent::Skipped { runs } => {
                eprintln!("[{at}] {runs} runs already trained: skipped")
            }
            ReproduceEvent::Analysing(what) => eprintln!("[{at}] {what}"),
            ReproduceEvent::Note(what) => eprintln!("[{at}] note: {what}"),
        }
    }
}
