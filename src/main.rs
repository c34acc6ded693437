//! The `tensorgrad` command line: train, evaluate and audit runs. Options are parsed here,
//! once, into the library's typed configuration (`src/cli/`).

mod cli;

use cli::console::Console;
use cli::{Cli, Command, FlagError};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tensorgrad::train::{audit_run, evaluate_run, train_until, train_with, TrainError};

/// The MPI job this process belongs to, when the binary is built with MPI.
mod distributed {
    use super::FlagError;
    use std::sync::Arc;
    use tensorgrad::train::collective::Collective;

    #[cfg(feature = "mpi")]
    pub fn world() -> Result<Arc<dyn Collective>, FlagError> {
        tensorgrad::train::mpi::MpiWorld::init()
            .map(|w| Arc::new(w) as Arc<dyn Collective>)
            .ok_or_else(|| FlagError {
                flag: "--distributed".into(),
                reason: "MPI could not be initialised with serialized thread support".into(),
            })
    }

    #[cfg(not(feature = "mpi"))]
    pub fn world() -> Result<Arc<dyn Collective>, FlagError> {
        Err(FlagError {
            flag: "--distributed".into(),
            reason:
                "this build has no MPI support; build with `cargo build --release --features mpi`"
                    .into(),
        })
    }
}

/// A failure, as the user should read it.
enum Failure {
    /// Options that do not fit together, named by flag.
    Flag(FlagError),
    /// The run failed.
    Run(TrainError),
    /// The run finished but broke the divergence rule.
    Diverged(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Flag(e) => write!(f, "{e}"),
            Failure::Diverged(text) => write!(f, "{text}"),
            // The library names its config fields; here they are the flags that set them.
            Failure::Run(e @ TrainError::Diverged { .. }) => write!(
                f,
                "{}",
                e.to_string()
                    .replace("allow_divergence", "--allow-divergence")
                    .replace("(lr)", "(--lr with --resume)")
            ),
            Failure::Run(TrainError::ResumeConflict { field, reason }) => write!(
                f,
                "--resume: {field}: {}",
                reason.replace("allow_rank_change", "--allow-rank-change")
            ),
            // A loss option out of range is reported against its flag.
            Failure::Run(TrainError::Loss(e)) => write!(f, "{}", FlagError::from(e.clone())),
            Failure::Run(TrainError::Config(e)) => {
                write!(f, "--{}: {}", e.field.replace('_', "-"), e.reason)
            }
            Failure::Run(TrainError::OutNotEmpty(dir)) => write!(
                f,
                "--out: {} is not empty (an earlier run?): resume it with --resume, or pass --force to replace its files",
                dir.display()
            ),
            Failure::Run(e @ TrainError::Interrupted { dir, .. }) => write!(
                f,
                "{e}\nresume with: {}",
                resume_command(
                    std::env::var_os("CARGO").is_some(),
                    &std::env::args().next().unwrap_or_default(),
                    dir
                )
            ),
            Failure::Run(e) => write!(f, "{e}"),
        }
    }
}

/// The command that resumes the run in `dir`, spelled the way this process was started:
/// through `cargo run` (which sets `CARGO` for the program it runs; `--release` when the
/// binary is a release build) or as the program path the user typed.
fn resume_command(via_cargo: bool, program: &str, dir: &std::path::Path) -> String {
    let dir = dir.display();
    if via_cargo {
        let release = if program.contains("/release/") {
            " --release"
        } else {
            ""
        };
        format!("cargo run{release} -- train --resume {dir}")
    } else {
        let program = if program.is_empty() {
            "tensorgrad"
        } else {
            program
        };
        format!("{program} train --resume {dir}")
    }
}

impl From<TrainError> for Failure {
    fn from(e: TrainError) -> Self {
        Failure::Run(e)
    }
}

/// A flag that SIGINT and SIGTERM set; a second signal ends the process at once.
fn stop_flag() -> Arc<AtomicBool> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Order matters: the shutdown check runs before the flag is set by this signal.
        let _ = flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop));
        let _ = flag::register(signal, Arc::clone(&stop));
    }
    stop
}

fn run(cli: Cli, given: &[String]) -> Result<(), Failure> {
    match cli.command {
        Command::Train(args) => {
            let config = args.to_config(given).map_err(Failure::Flag)?;
            let mut console = Console::new(args.quiet);
            let stop = stop_flag();
            let summary = if args.distributed {
                let comm = distributed::world().map_err(Failure::Flag)?;
                train_with(&config, comm, &stop, &mut |e| console.on_event(e))?
            } else {
                train_until(&config, &stop, &mut |e| console.on_event(e))?
            };
            // A run that ended at chance is not reported as a success.
            if let Some(d) = &summary.divergence {
                if !config.allow_divergence {
                    return Err(Failure::Diverged(format!(
                        "the run diverged: {} (the divergence rule; --allow-divergence accepts it); \
                         its outputs are in {}, marked \"divergence\" in metrics.json",
                        d.rule,
                        summary.out_dir.display()
                    )));
                }
                say!("note: the run diverged: {} (allowed)", d.rule);
            }
        }
        Command::Eval(args) => {
            let e = evaluate_run(&args.checkpoint, args.data_dir().as_deref())?;
            say!(
                "test accuracy {:.2}%  balanced accuracy {:.2}%  loss {:.4}",
                100.0 * e.accuracy,
                100.0 * e.balanced_accuracy,
                e.loss
            );
            say!("{:>6} {:>7} {:>9}", "class", "n", "accuracy");
            for (c, (acc, n)) in e.per_class_accuracy.iter().zip(&e.counts).enumerate() {
                say!("{c:>6} {n:>7} {:>8.2}%", 100.0 * acc);
            }
        }
        Command::Bench(args) => {
            let r = tensorgrad::train::bench::run_bench(&args.to_config())?;
            if r.profile.is_some() {
                eprint!("{}", cli::bench::profile_table(&r));
            }
            say!("{}", serde_json::to_string(&r).expect("results serialise"));
        }
        Command::Reproduce(args) => {
            let config = args.to_config().map_err(Failure::Flag)?;
            let console = cli::reproduce::ReproduceConsole::default();
            let stop = stop_flag();
            let outcome = match tensorgrad::reproduce::reproduce(&config, &stop, &|e| {
                console.on_event(e)
            }) {
                Err(TrainError::Interrupted { .. }) => {
                    eprintln!("interrupted: every run's progress is checkpointed; run the same command again to continue");
                    std::process::exit(130);
                }
                r => r?,
            };
            if config.quick {
                say!("quick mode: small data and 2 epochs — a smoke test of the pipeline, not evidence; the verdicts below say nothing about the paper");
            }
            for v in &outcome.verdicts {
                say!("{}: {}", v.claim, v.verdict);
            }
            if config.train_only {
                say!(
                    "trained (--train-only): run the same command without it to analyse and report"
                );
            }
            say!(
                "{} runs; report: {} ({:.0} s)",
                outcome.runs,
                outcome.report.display(),
                outcome.seconds
            );
        }
        Command::Graph(args) => match cli::graph::render(&args) {
            Ok(text) => say!("{}", text.trim_end()),
            Err(cli::graph::GraphError::Flag(e)) => return Err(Failure::Flag(e)),
            Err(cli::graph::GraphError::Run(e)) => return Err(Failure::Run(e)),
        },
        Command::Audit(args) => {
            let a = audit_run(&args.checkpoint, args.data_dir().as_deref())?;
            say!("{}", a.to_string().trim_end());
            say!(
                "written to {}",
                args.checkpoint.join("audit.json").display()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let (cli, given) = match cli::parse_with_given(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(e) => e.exit(),
    };
    match run(cli, &given) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Failure::Run(TrainError::Interrupted { .. })) => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        // A distinct code for a diverged run, so that scripts can tell it from a crash.
        Err(e @ (Failure::Diverged(_) | Failure::Run(TrainError::Diverged { .. }))) => {
            eprintln!("error: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::resume_command;
    use std::path::Path;

    #[test]
    fn the_resume_hint_names_the_command_that_was_run() {
        let dir = Path::new("runs/x");
        assert_eq!(
            resume_command(true, "/w/target/release/tensorgrad", dir),
            "cargo run --release -- train --resume runs/x"
        );
        assert_eq!(
            resume_command(true, "/w/target/debug/tensorgrad", dir),
            "cargo run -- train --resume runs/x"
        );
        assert_eq!(
            resume_command(false, "./target/release/tensorgrad", dir),
            "./target/release/tensorgrad train --resume runs/x"
        );
        assert_eq!(
            resume_command(false, "", dir),
            "tensorgrad train --resume runs/x"
        );
    }
}
