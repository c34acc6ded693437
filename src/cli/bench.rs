//! `tensorgrad bench train-step|infer`: one JSON line of throughput, and with `--profile`
//! a table of the time per op of one step (on stderr, so stdout stays one JSON line).

use clap::Args;
use tensorgrad::autograd::profile::Phase;
use tensorgrad::nn::models::ModelKind;
use tensorgrad::train::bench::{BenchConfig, BenchMode, BenchResult};

/// The options of `tensorgrad bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// train-step or infer.
    pub mode: BenchMode,
    /// Model (the names of `ModelKind`).
    #[arg(long, default_value = "lenet", help = format!("Model: {}", ModelKind::keywords()))]
    pub model: ModelKind,
    /// Images per step.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536).map(|n| n as usize))]
    pub batch_size: usize,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024).map(|n| n as usize))]
    pub threads: Option<usize>,
    /// Length of the timed loop after the warm-up, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Also time each op of one step (forward per layer kind, backward per op).
    #[arg(long)]
    pub profile: bool,
}

use clap::builder::TypedValueParser;

impl BenchArgs {
    /// The library's benchmark configuration.
    pub fn to_config(&self) -> BenchConfig {
        BenchConfig {
            mode: self.mode,
            model: self.model,
            batch_size: self.batch_size,
            threads: self.threads,
            seconds: self.seconds,
            profile: self.profile,
        }
    }
}

/// The profile as a table: phase, op, calls, milliseconds and share of the step.
pub fn profile_table(r: &BenchResult) -> String {
    let Some(rows) = &r.profile else {
        return String::new();
    };
    let total: f64 = rows.iter().map(|row| row.ms).sum();
    let mut out = format!(
        "one {} of {} at batch {} on {} threads: {:.2} ms\n{:<9} {:<14} {:>6} {:>9} {:>7}\n",
        r.mode, r.model, r.batch_size, r.threads, total, "phase", "op", "calls", "ms", "share"
    );
    for row in rows {
        let phase = phase_name(row.phase);
        out += &format!(
            "{phase:<9} {:<14} {:>6} {:>9.3} {:>6.1}%\n",
            row.op,
            row.calls,
            row.ms,
            100.0 * row.ms / total.max(f64::MIN_POSITIVE)
        );
    }
    let Some(layers) = &r.layers else {
        return out;
    };
    let sgemm = r.sgemm_gflops.unwrap_or(f64::NAN);
    out += &format!(
        "\nper layer (square 512³ sgemm: {sgemm:.1} GFLOP/s on the same threads)\n{:<9} {:<40} {:>5} {:>9} {:>8} {:>8} {:>6}\n",
        "phase", "layer", "calls", "ms", "GFLOP", "GFLOP/s", "/sgemm"
    );
    for l in layers {
        out += &format!(
            "{:<9} {:<40} {:>5} {:>9.3} {:>8.3} {:>8.1} {:>6.2}\n",
            phase_name(l.phase),
            l.layer,
            l.calls,
            l.ms,
            l.gflop,
            l.gflops(),
            l.gflops() / sgemm
        );
    }
    out
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Forward => "forward",
        Phase::Backward => "backward",
        Phase::Update => "update",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn bench_prints_one_json_line_and_a_profile_table() {
        let cli = Cli::try_parse_from([
            "tensorgrad",
            "bench",
            "train-step",
            "--model",
            "linear",
            "--batch-size",
            "4",
            "--threads",
            "1",
            "--seconds",
            "0.02",
            "--profile",
        ])
        .unwrap();
        let Command::Bench(args) = cli.command else {
            unreachable!("parsed a bench command")
        };
        let r = tensorgrad::train::bench::run_bench(&args.to_config()).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        for key in ["images_per_sec", "model", "batch_size", "threads", "mode"] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert_eq!(json["mode"], "train-step");
        assert_eq!(json["profile"][0]["phase"], "forward");
        let table = profile_table(&r);
        assert!(table.contains("backward  matmul"), "{table}");
        assert!(Cli::try_parse_from(["tensorgrad", "bench", "fly"]).is_err());
    }
}
