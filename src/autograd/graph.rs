//! A view of the recorded autodiff graph, for people who study how the engine works: every
//! node with its op, shape, and the buffers its record keeps alive for backward, as an
//! indented text tree or as Graphviz DOT.
//!
//! ```
//! use tensorgrad::Tensor;
//!
//! let w = Tensor::<f32>::ones(&[3, 2]).with_grad();
//! let x = Tensor::<f32>::ones(&[4, 3]);
//! let loss = x.matmul(&w)?.relu().sum_all();
//! let graph = loss.graph().with_label(&w, "w");
//! let text = graph.to_text();
//! assert!(text.starts_with("sum "));
//! assert!(text.contains("relu [4, 2]"));
//! assert!(text.contains("leaf w [3, 2]"));
//! // matmul keeps x (4·3 f32 = 48 bytes) for w's gradient; relu keeps its output.
//! assert!(text.contains("matmul [4, 2]  keeps 48 B"));
//! assert!(graph.to_dot().starts_with("digraph"));
//! # Ok::<(), tensorgrad::TensorError>(())
//! ```

use super::Op;
use crate::tensor::{Element, Tensor, TensorId};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// One node of a [`Graph`].
#[derive(Clone, Debug, PartialEq)]
pub struct GraphNode {
    /// The tensor's id.
    pub id: TensorId,
    /// The op that computed it; `None` for a leaf or a tensor that records nothing.
    pub op: Option<&'static str>,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Whether gradients flow to it.
    pub requires_grad: bool,
    /// The nodes its op read, in order.
    pub inputs: Vec<TensorId>,
    /// Bytes of the buffers its op record keeps alive for backward.
    pub saved_bytes: usize,
    /// A name given with [`Graph::with_label`].
    pub label: Option<String>,
    /// The kept buffers themselves, (address, bytes), to count shared ones once.
    buffers: Vec<(usize, usize)>,
}

/// What one layer's nodes keep for backward ([`Graph::kept_by_scope`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeKept {
    /// The layer's path, or its kind for an unnamed layer at the top.
    pub name: String,
    /// Nesting depth (1: a layer of the outermost module).
    pub depth: usize,
    /// Shape of the layer's last node in the graph (its output).
    pub output: Vec<usize>,
    /// Bytes its nodes keep, each buffer counted once within the layer.
    pub kept_bytes: usize,
    /// Per op, in graph order, the bytes it keeps (ops that keep nothing left out).
    pub ops: Vec<(&'static str, usize)>,
}

/// The graph that produced a tensor, root last, inputs before the nodes that read them.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// The nodes in topological order; the last is the root.
    pub nodes: Vec<GraphNode>,
    /// Bytes kept for backward by the whole graph, each buffer counted once.
    pub total_saved_bytes: usize,
}

/// Buffers an op record keeps alive: (address, bytes), to count shared buffers once.
fn kept_buffers<T: Element>(op: &Op<T>) -> Vec<(usize, usize)> {
    let tensor = |t: &Tensor<T>| (t.storage().as_ptr() as usize, t.storage_bytes());
    let mut kept: Vec<(usize, usize)> = op
        .inputs()
        .into_iter()
        .filter(|t| !t.is_graph_handle())
        .map(tensor)
        .collect();
    match op {
        Op::Unary {
            output: Some(y), ..
        } => kept.push((y.as_ptr() as usize, y.len() * std::mem::size_of::<T>())),
        Op::Custom(op) => kept.extend(op.kept_buffers()),
        Op::Take { positions, .. } => kept.push((
            positions.as_ptr() as usize,
            positions.len() * std::mem::size_of::<usize>(),
        )),
        _ => {}
    }
    kept.retain(|&(_, bytes)| bytes > 0);
    kept
}

impl<T: Element> Tensor<T> {
    /// The recorded graph that computed this tensor (before backward frees it).
    pub fn graph(&self) -> Graph {
        let mut buffers: HashMap<usize, usize> = HashMap::new();
        let nodes = super::backward::topological_order(self, |_| true)
            .into_iter()
            .map(|t| {
                let slot = t.op_slot().lock().expect("op lock poisoned");
                let (op, inputs, kept) = match &*slot {
                    Some(op) => (
                        Some(op.name()),
                        op.inputs().iter().map(|i| i.id()).collect(),
                        kept_buffers(op),
                    ),
                    None => (None, Vec::new(), Vec::new()),
                };
                buffers.extend(kept.iter().copied());
                GraphNode {
                    id: t.id(),
                    op,
                    shape: t.shape().to_vec(),
                    requires_grad: t.requires_grad(),
                    inputs,
                    saved_bytes: kept.iter().map(|&(_, b)| b).sum(),
                    label: None,
                    buffers: kept,
                }
            })
            .collect();
        Graph {
            nodes,
            total_saved_bytes: buffers.values().sum(),
        }
    }
}

/// `1234` → `1.2 kB`, decimal units.
fn human_bytes(bytes: usize) -> String {
    match bytes {
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

impl Graph {
    /// Names the node of `tensor` (a parameter, the input batch) in the output.
    pub fn with_label<T: Element>(mut self, tensor: &Tensor<T>, label: &str) -> Self {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.id == tensor.id()) {
            n.label = Some(label.to_string());
        }
        self
    }

    /// What the nodes made by each recorded layer ([`super::scope::record`]) of depth at
    /// most `max_depth` keep for backward. A buffer two layers keep (a block's output,
    /// kept by the next block's first conv as its input) counts in both; the graph's
    /// total counts it once.
    pub fn kept_by_scope(
        &self,
        scopes: &[super::scope::Scope],
        max_depth: usize,
    ) -> Vec<ScopeKept> {
        scopes
            .iter()
            .filter(|s| s.depth <= max_depth)
            .filter_map(|s| {
                let nodes: Vec<&GraphNode> = self
                    .nodes
                    .iter()
                    .filter(|n| s.ids.contains(&n.id))
                    .collect();
                let last = nodes.iter().max_by_key(|n| n.id)?;
                let mut seen = HashSet::new();
                let mut ops = Vec::new();
                let mut kept_bytes = 0;
                let mut in_order = nodes.clone();
                in_order.sort_by_key(|n| n.id);
                for n in in_order {
                    let fresh: usize = n
                        .buffers
                        .iter()
                        .filter(|b| seen.insert(b.0))
                        .map(|b| b.1)
                        .sum();
                    kept_bytes += fresh;
                    if let (Some(op), true) = (n.op, n.saved_bytes > 0) {
                        ops.push((op, n.saved_bytes));
                    }
                }
                let name = if s.path.is_empty() {
                    s.kind.to_string()
                } else {
                    s.path.clone()
                };
                Some(ScopeKept {
                    name,
                    depth: s.depth.max(1),
                    output: last.shape.clone(),
                    kept_bytes,
                    ops,
                })
            })
            .collect()
    }

    /// [`Graph::kept_by_scope`] as text: one line per layer, indented by depth, with what
    /// each of its ops keeps.
    pub fn kept_by_scope_text(&self, scopes: &[super::scope::Scope], max_depth: usize) -> String {
        let mut out = String::from("kept for backward, by layer:\n");
        let layers = self.kept_by_scope(scopes, max_depth);
        for (i, k) in layers.iter().enumerate() {
            let indent = "  ".repeat(k.depth);
            // A layer whose sublayers follow gets its total; they list their ops.
            let has_children = layers.get(i + 1).is_some_and(|next| next.depth > k.depth);
            let ops: Vec<String> = k
                .ops
                .iter()
                .map(|(op, b)| format!("{op} {}", human_bytes(*b)))
                .collect();
            let ops = if ops.is_empty() || has_children {
                String::new()
            } else {
                format!(" ({})", ops.join(", "))
            };
            writeln!(
                out,
                "{indent}{} → {:?}: {}{ops}",
                k.name,
                k.output,
                human_bytes(k.kept_bytes)
            )
            .expect("writing to a String");
        }
        out
    }

    fn describe(n: &GraphNode) -> String {
        let mut s = match (n.op, &n.label) {
            (Some(op), Some(l)) => format!("{op} ({l}) {:?}", n.shape),
            (Some(op), None) => format!("{op} {:?}", n.shape),
            (None, Some(l)) => format!("leaf {l} {:?}", n.shape),
            (None, None) if n.requires_grad => format!("leaf {:?}", n.shape),
            (None, None) => format!("constant {:?}", n.shape),
        };
        if n.saved_bytes > 0 {
            write!(s, "  keeps {}", human_bytes(n.saved_bytes)).expect("writing to a String");
        }
        s
    }

    /// An indented tree from the root: each node's inputs are indented under it; a node
    /// reached a second time (a reused tensor) is printed as a reference to its first line.
    pub fn to_text(&self) -> String {
        let by_id: HashMap<TensorId, (usize, &GraphNode)> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id, (i, n)))
            .collect();
        let mut out = String::new();
        let mut printed = HashSet::new();
        let Some(root) = self.nodes.last() else {
            return out;
        };
        let mut stack = vec![(root.id, 0usize)];
        while let Some((id, depth)) = stack.pop() {
            let (index, n) = by_id[&id];
            let indent = "  ".repeat(depth);
            if !printed.insert(id) {
                writeln!(out, "{indent}↑ node #{index} (reused)").expect("writing to a String");
                continue;
            }
            writeln!(out, "{indent}{}  #{index}", Self::describe(n)).expect("writing to a String");
            for input in n.inputs.iter().rev() {
                stack.push((*input, depth + 1));
            }
        }
        writeln!(
            out,
            "{} nodes; buffers kept for backward: {}",
            self.nodes.len(),
            human_bytes(self.total_saved_bytes)
        )
        .expect("writing to a String");
        out
    }

    /// Graphviz DOT, data flowing downwards; nodes that keep buffers are shaded.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph autodiff {\n  node [shape=box, fontname=monospace];\n");
        let index: HashMap<TensorId, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id, i))
            .collect();
        for (i, n) in self.nodes.iter().enumerate() {
            let label = Self::describe(n)
                .replace("  keeps", "\\nkeeps")
                .replace('"', "\\\"");
            let style = if n.saved_bytes > 0 {
                ", style=filled, fillcolor=lightyellow"
            } else if n.op.is_none() {
                ", style=rounded"
            } else {
                ""
            };
            writeln!(out, "  n{i} [label=\"#{i} {label}\"{style}];").expect("writing to a String");
            for input in &n.inputs {
                writeln!(out, "  n{} -> n{i};", index[input]).expect("writing to a String");
            }
        }
        writeln!(
            out,
            "  label=\"{} nodes; buffers kept for backward: {}\";\n}}",
            self.nodes.len(),
            human_bytes(self.total_saved_bytes)
        )
        .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    /// Per layer: each layer's nodes and what they keep; a buffer shared by two layers
    /// counts in each layer but once in the total.
    #[test]
    fn kept_by_scope_sums_each_layers_nodes() {
        use crate::autograd::scope;
        use crate::nn::{Module, Relu, Sequential};
        let mut net = Sequential::new()
            .push("a", Relu)
            .push("inner", Sequential::new().push("b", Relu));
        let x = rand_input(&[2, 3], 1).detach().with_grad();
        let (y, scopes) = scope::record(|| net.forward(&x));
        let y = y.unwrap().exp(); // outside every layer: attributed to none
        let g = y.graph();
        let layers = g.kept_by_scope(&scopes, 2);
        let names: Vec<(&str, usize)> = layers.iter().map(|k| (k.name.as_str(), k.depth)).collect();
        assert_eq!(names, [("a", 1), ("inner", 1), ("inner.b", 2)]);
        // Each ReLU keeps its output, 6 f64 = 48 B; exp keeps its own output too.
        for k in &layers {
            assert_eq!(
                (k.kept_bytes, k.output.as_slice()),
                (48, &[2, 3][..]),
                "{k:?}"
            );
        }
        assert_eq!(layers[0].ops, [("relu", 48)]);
        assert_eq!(g.total_saved_bytes, 3 * 48);
        let text = g.kept_by_scope_text(&scopes, 1);
        assert_eq!(text, "kept for backward, by layer:\n  a → [2, 3]: 48 B (relu 48 B)\n  inner → [2, 3]: 48 B (relu 48 B)\n");
    }

    #[test]
    fn diamond_is_one_node_reached_twice_and_shared_buffers_count_once() {
        let x = rand_input(&[2, 3], 1);
        let a = x.exp(); // keeps its output (48 B)
        let y = a.mul(&a).unwrap().sum_all(); // mul keeps `a` twice: the same buffer
        let g = y.graph().with_label(&x, "x");
        assert_eq!(g.nodes.len(), 4);
        let ops: Vec<Option<&str>> = g.nodes.iter().map(|n| n.op).collect();
        assert_eq!(ops, vec![None, Some("exp"), Some("mul"), Some("sum")]);
        assert_eq!(g.nodes[1].saved_bytes, 48);
        assert_eq!(g.nodes[2].saved_bytes, 96);
        assert_eq!(g.total_saved_bytes, 48);
        let text = g.to_text();
        assert!(text.contains("↑ node #1 (reused)"), "{text}");
        assert!(text.contains("leaf x [2, 3]"), "{text}");
        let dot = g.to_dot();
        assert_eq!(dot.matches("n1 -> n2;").count(), 2, "{dot}");
        // Backward frees the records: the graph is then the root alone.
        y.backward().unwrap();
        assert_eq!(y.graph().nodes.len(), 1);
    }
}
