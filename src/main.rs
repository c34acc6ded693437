//! The `tensorgrad` command line: train, evaluate and audit runs. Options are parsed here,
//! once, into the library's typed configuration (`src/cli/`).

mod cli;

use clap::Parser;
use cli::console::Console;
use cli::{Cli, Command, FlagError};
use std::process::ExitCode;
use tensorgrad::train::{audit_run, evaluate_run, train, TrainError};

/// A failure, as the user should read it.
enum Failure {
    /// Options that do not fit together, named by flag.
    Flag(FlagError),
    /// The run failed.
    Run(TrainError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Flag(e) => write!(f, "{e}"),
            // A loss option out of range is reported against its flag.
            Failure::Run(TrainError::Loss(e)) => write!(f, "{}", FlagError::from(e.clone())),
            Failure::Run(e) => write!(f, "{e}"),
        }
    }
}

impl From<TrainError> for Failure {
    fn from(e: TrainError) -> Self {
        Failure::Run(e)
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Train(args) => {
            let config = args.to_config().map_err(Failure::Flag)?;
            let mut console = Console::new(args.quiet);
            train(&config, &mut |e| console.on_event(e))?;
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
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
