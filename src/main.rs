//! The `tensorgrad` command line: train, evaluate and audit runs.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tensorgrad::train::{audit_run, evaluate_run, train, TrainConfig};

/// tensorgrad: train CNNs on the CPU with the losses of Li et al. (AAAI 2020).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (defaults: MNIST, lenet, lgl-inr, SGD momentum 0.9, lr 0.01 cosine, 5 epochs).
    Train(Box<TrainConfig>),
    /// Test-set metrics of a saved run.
    Eval {
        /// The run directory (holding config.json and model.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
    },
    /// The stationarity audit of a saved run on its training set; writes audit.json.
    Audit {
        /// The run directory (holding config.json and model.safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
    },
}

/// `println!` that ignores a closed stdout (`tensorgrad eval … | head` must not panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(config) => train(&config).map(|_| ()),
        Command::Eval { checkpoint } => evaluate_run(&checkpoint).map(|e| {
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
        }),
        Command::Audit { checkpoint } => audit_run(&checkpoint).map(|a| {
            say!("{}", a.to_string().trim_end());
            say!("written to {}", checkpoint.join("audit.json").display());
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
