//! The `tensorgrad` command line (training, evaluation and audit arrive with later issues).

fn main() {
    println!(
        "tensorgrad {}: a from-scratch deep-learning framework for CPU training.\n\
         The library is usable now; the train/eval/audit commands are not built yet.",
        env!("CARGO_PKG_VERSION")
    );
}
