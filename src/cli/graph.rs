//! `tensorgrad graph`: the autodiff graph of one training step of a model, before
//! backward frees it.

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tensorgrad::loss::{build_loss, Loss, LossOptions};
use tensorgrad::nn::models::ModelKind;
use tensorgrad::nn::Module;
use tensorgrad::train::{model_outputs, TrainError};
use tensorgrad::Tensor;

use super::{FlagError, LossArgs};

/// How to print the graph.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum GraphFormat {
    /// An indented tree.
    Text,
    /// Graphviz DOT (`dot -Tsvg`).
    Dot,
}

/// The options of `tensorgrad graph`.
#[derive(Args, Clone, Debug)]
pub struct GraphArgs {
    /// Model (the names of `ModelKind`).
    #[arg(long, default_value = "lenet", help = format!("Model: {}", ModelKind::keywords()))]
    pub model: ModelKind,
    /// Loss options.
    #[command(flatten)]
    pub loss: LossArgs,
    /// Batch size of the step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Classes (MNIST and CIFAR-10: 10).
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Output format: text or dot.
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,
}

/// Failures of `graph`, with the flag to blame where there is one.
pub enum GraphError {
    /// A bad combination of options.
    Flag(FlagError),
    /// The step failed.
    Run(TrainError),
}

/// The graph of one training step on a random batch, printed in the chosen format.
pub fn render(args: &GraphArgs) -> Result<String, GraphError> {
    let options: LossOptions = args.loss.clone().into();
    options
        .check_applicable()
        .map_err(|e| GraphError::Flag(e.into()))?;
    let input = args.model.native_input();
    let counts = vec![1; args.classes];
    let run = |e: TrainError| GraphError::Run(e);
    let loss: Box<dyn Loss<f32>> =
        build_loss(&options, &counts).map_err(|e| GraphError::Flag(e.into()))?;
    let outputs = model_outputs(args.classes, loss.as_ref());
    let mut model = args
        .model
        .build::<f32>(input, outputs, 0)
        .map_err(|e| run(e.into()))?;
    let mut rng = StdRng::seed_from_u64(0);
    let [c, h, w] = input;
    let x = Tensor::<f32>::normal(&[args.batch_size, c, h, w], 0.0, 1.0, &mut rng);
    let labels: Vec<usize> = (0..args.batch_size)
        .map(|_| rng.random_range(0..args.classes))
        .collect();
    let (logits, scopes) = tensorgrad::autograd::scope::record(|| model.forward(&x));
    let logits = logits.map_err(|e| run(e.into()))?;
    let l = loss.forward(&logits, &labels).map_err(|e| run(e.into()))?;
    let mut graph = l.graph().with_label(&x, "input batch");
    for (name, _, t) in model.named_tensors() {
        graph = graph.with_label(&t, &name);
    }
    Ok(match args.format {
        GraphFormat::Text => format!(
            "{}\n{}",
            graph.to_text(),
            graph.kept_by_scope_text(&scopes, 2)
        ),
        GraphFormat::Dot => graph.to_dot(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn graph(args: &[&str]) -> String {
        let mut argv = vec!["tensorgrad", "graph"];
        argv.extend_from_slice(args);
        let Command::Graph(g) = Cli::try_parse_from(argv).unwrap().command else {
            unreachable!("parsed a graph command")
        };
        match render(&g) {
            Ok(text) => text,
            Err(GraphError::Flag(e)) => e.to_string(),
            Err(GraphError::Run(e)) => e.to_string(),
        }
    }

    #[test]
    fn lenet_step_graph_names_layers_and_counts_kept_buffers() {
        let text = graph(&["--batch-size", "2"]);
        for want in [
            "conv2d+relu [2, 20, 24, 24]",
            "leaf conv1.weight [20, 1, 5, 5]",
            "leaf input batch [2, 1, 28, 28]",
            "leaf fc2.bias [10]",
            "buffers kept for backward",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        // conv1 and its ReLU run fused; the op keeps its output (2·20·24·24 f32 =
        // 92.2 kB) for the mask and the input batch (2·784 f32 = 6.3 kB) for dW.
        assert!(
            text.contains("conv2d+relu [2, 20, 24, 24]  keeps 98.4 kB"),
            "{text}"
        );
        let dot = graph(&["--format", "dot", "--model", "linear", "--loss", "sml"]);
        assert!(dot.starts_with("digraph autodiff {") && dot.trim_end().ends_with('}'));
        assert_eq!(
            graph(&["--loss", "sml", "--beta", "1"]),
            "--beta: does not apply to sml (only to lgl-inr)"
        );
    }

    /// Every model of the zoo renders its step graph at its native input: the residual
    /// networks show their batch norms, the option-A shortcut and the depthwise convs.
    #[test]
    fn every_model_renders_its_step_graph() {
        for model in ModelKind::ALL {
            let text = graph(&["--batch-size", "2", "--model", model.as_str()]);
            assert!(
                text.contains("buffers kept for backward"),
                "{model}:\n{text}"
            );
        }
        let r20 = graph(&["--batch-size", "2", "--model", "resnet20"]);
        assert!(
            r20.contains("batch_norm2d+relu [2, 16, 32, 32]")
                && r20.contains("batch_norm2d [2, 16, 32, 32]")
                && r20.contains("subsample_pad"),
            "{r20}"
        );
        // What each block keeps: a basic block of batch 2 at 16×32×32 (131.1 kB a map):
        // conv1 its input and weights (9.2 kB), bn1+relu its input alone (it recomputes x̂),
        // conv2 its input, bn2 its input, the closing add+relu its output.
        assert!(
            r20.contains(
                "    layer1.1 → [2, 16, 32, 32]: 673.8 kB (conv2d 140.3 kB, \
                 batch_norm2d+relu 131.1 kB, conv2d 140.3 kB, batch_norm2d 131.1 kB, add+relu 131.1 kB)"
            ),
            "{r20}"
        );
        let mobile = graph(&["--batch-size", "2", "--model", "mobilenet-v2"]);
        assert!(
            mobile.contains("leaf features.2.conv.1.0.weight [96, 1, 3, 3]"),
            "{mobile}"
        );
    }
}
