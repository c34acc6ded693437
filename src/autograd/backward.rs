//! The backward pass: topological order, derivative rules, accumulation.

use super::{BinaryOp, NoGradGuard, Op, Saved};
use crate::error::{Result, TensorError};
use crate::tensor::{Element, Tensor, TensorId};
use std::collections::{HashMap, HashSet};

/// Gradients of the leaves of one backward pass, keyed by tensor id.
pub struct Gradients<T: Element> {
    map: HashMap<TensorId, Tensor<T>>,
}

impl<T: Element> std::fmt::Debug for Gradients<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.map.iter()).finish()
    }
}

impl<T: Element> Gradients<T> {
    /// A store with no gradients.
    pub fn empty() -> Self {
        Gradients {
            map: HashMap::new(),
        }
    }

    /// The gradient of `leaf`, if it took part in the graph.
    pub fn get(&self, leaf: &Tensor<T>) -> Option<&Tensor<T>> {
        self.map.get(&leaf.id())
    }

    /// The gradient of the leaf with this id.
    pub fn get_id(&self, id: TensorId) -> Option<&Tensor<T>> {
        self.map.get(&id)
    }

    /// Sets (or replaces) the gradient of `leaf` — for gradients combined outside the
    /// engine, such as an all-reduce across processes.
    pub fn set(&mut self, leaf: &Tensor<T>, grad: Tensor<T>) {
        self.map.insert(leaf.id(), grad);
    }

    /// Takes the gradient of `leaf` out of the store.
    pub fn remove(&mut self, leaf: &Tensor<T>) -> Option<Tensor<T>> {
        self.map.remove(&leaf.id())
    }

    /// Number of leaves with a gradient.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no leaf received a gradient.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops every gradient (between optimisation steps).
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

impl<T: Element> Tensor<T> {
    /// Backpropagates from this scalar (seed 1) and returns the gradients of all leaves.
    ///
    /// The recorded graph is freed as it is consumed, so a second `backward` through the
    /// same graph is an error (as PyTorch without `retain_graph`).
    /// ```
    /// use tensorgrad::Tensor;
    ///
    /// // A diamond: x feeds two paths that meet again; the gradients add up.
    /// let x = Tensor::<f64>::from_vec(vec![2.0], &[1])?.with_grad();
    /// let y = x.mul(&x)?.add(&x.mul_scalar(3.0))?; // x² + 3x
    /// let grads = y.sum_all().backward()?;
    /// assert_eq!(grads.get(&x).unwrap().to_vec(), vec![7.0]); // 2x + 3
    /// // The graph was freed: a second backward through it is an error.
    /// assert!(y.sum_all().backward().is_err());
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn backward(&self) -> Result<Gradients<T>> {
        if self.numel() != 1 {
            return Err(TensorError::Backward(format!(
                "backward() needs a one-element output, got shape {:?}; use backward_with",
                self.shape()
            )));
        }
        self.backward_with(&Tensor::ones(self.shape()))
    }

    /// Backpropagates `seed` (the gradient of some scalar with respect to this tensor).
    pub fn backward_with(&self, seed: &Tensor<T>) -> Result<Gradients<T>> {
        if !self.requires_grad() {
            return Err(TensorError::Backward(
                "the tensor does not require grad (no input required grad, or it was computed under no_grad)".into(),
            ));
        }
        if seed.shape() != self.shape() {
            return Err(TensorError::ShapeMismatch {
                op: "backward_with",
                lhs: self.shape().to_vec(),
                rhs: seed.shape().to_vec(),
            });
        }
        let order = topological_order(self, Tensor::requires_grad);
        let _no_grad = NoGradGuard::new();
        let mut grads: HashMap<TensorId, Tensor<T>> = HashMap::new();
        grads.insert(self.id(), seed.detach());
        for node in order.iter().rev() {
            if node.is_leaf() {
                continue;
            }
            // Interior gradients are dropped as soon as they are propagated.
            let Some(grad) = grads.remove(&node.id()) else {
                continue;
            };
            let op = node.op_slot().lock().expect("op lock poisoned").take();
            let Some(op) = op else {
                return Err(TensorError::Backward(
                    "the graph was already freed by an earlier backward".into(),
                ));
            };
            let input_grads =
                super::profile::time(super::profile::Phase::Backward, op.name(), || {
                    derivative(&op, &grad)
                })?;
            for (input, g) in op.inputs().into_iter().zip(input_grads) {
                let Some(g) = g else { continue };
                if !input.requires_grad() {
                    continue;
                }
                debug_assert_eq!(g.shape(), input.shape(), "rule of {}", op.name());
                let sum = match grads.remove(&input.id()) {
                    Some(acc) => accumulate(acc, &g)?,
                    None => g,
                };
                grads.insert(input.id(), sum);
            }
        }
        Ok(Gradients { map: grads })
    }
}

/// `acc + g` for a node reached twice (micrograd's `+=`): in place when nothing else holds
/// `acc`'s values, else a new tensor ([`Tensor::add`]); bitwise the same either way. The
/// new buffer and its pass were 2% of a resnet20 training step, a sum per residual block.
fn accumulate<T: Element>(mut acc: Tensor<T>, g: &Tensor<T>) -> Result<Tensor<T>> {
    if acc.shape() != g.shape() || !acc.owns_its_values() {
        return acc.add(g);
    }
    let g = g.values();
    acc.update_data(|a| crate::kernels::elementwise::zip_in_place(a, &g, |x, y| x + y));
    Ok(acc)
}

/// Nodes reachable from `root` through recorded ops whose inputs pass `follow`, inputs
/// before the ops that read them (backward follows what requires grad; the graph view
/// follows everything).
pub(crate) fn topological_order<T: Element>(
    root: &Tensor<T>,
    follow: impl Fn(&Tensor<T>) -> bool,
) -> Vec<Tensor<T>> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    // Iterative post-order DFS: (node, inputs already pushed?).
    let mut stack = vec![(root.clone(), false)];
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !visited.insert(node.id()) {
            continue;
        }
        let inputs: Vec<Tensor<T>> = match &*node.op_slot().lock().expect("op lock poisoned") {
            Some(op) => op.inputs().into_iter().cloned().collect(),
            None => Vec::new(),
        };
        stack.push((node, true));
        for input in inputs {
            if follow(&input) && !visited.contains(&input.id()) {
                stack.push((input, false));
            }
        }
    }
    order
}

/// The derivative rule of every core op: gradients of the inputs given the output's.
fn derivative<T: Element>(op: &Op<T>, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>> {
    Ok(match op {
        Op::Unary { input, f, output } => {
            let g = grad.values();
            let dx = match (f.saves(), output) {
                (Saved::Input, _) => f.backward_slice(&input.values(), &g),
                (Saved::Output, Some(y)) => f.backward_slice(y, &g),
                (Saved::Output, None) => {
                    return Err(TensorError::Backward(format!(
                        "{}: the output was not saved",
                        f.name()
                    )))
                }
                (Saved::Nothing, _) => f.backward_slice(&[], &g),
            };
            vec![Some(Tensor::from_contiguous(dx, input.shape()))]
        }
        Op::Binary { lhs, rhs, op } => {
            let (ga, gb) = binary_grads(*op, lhs, rhs, grad);
            vec![ga, gb]
        }
        Op::Sum { input, axes } => {
            let mut kept = input.shape().to_vec();
            for &a in axes {
                kept[a] = 1;
            }
            vec![Some(grad.reshape(&kept)?.broadcast_to(input.shape())?)]
        }
        Op::Matmul { lhs, rhs } => {
            let (ga, gb) = matmul_grads(lhs, rhs, grad)?;
            vec![ga, gb]
        }
        // A copy into row-major order has the identity as its derivative: the gradient
        // (row-major, like every gradient) only takes the input's shape back.
        Op::Reshape { input } | Op::Contiguous { input } => {
            vec![Some(grad.reshape(input.shape())?)]
        }
        Op::Permute { input: _, perm } => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            vec![Some(grad.permute(&inverse)?)]
        }
        Op::BroadcastTo { input } => vec![Some(grad.sum_to(input.shape())?)],
        Op::Narrow { input, axis, start } => {
            let (axis, start) = (*axis, *start);
            let len = grad.shape()[axis];
            let zeros_of = |n: usize| {
                let mut s = input.shape().to_vec();
                s[axis] = n;
                Tensor::zeros(&s)
            };
            let after = input.shape()[axis] - start - len;
            let parts: Vec<Tensor<T>> = [
                (start > 0).then(|| zeros_of(start)),
                Some(grad.clone()),
                (after > 0).then(|| zeros_of(after)),
            ]
            .into_iter()
            .flatten()
            .collect();
            vec![Some(Tensor::concat(&parts, axis as isize)?)]
        }
        Op::Concat { inputs, axis } => {
            let mut start = 0;
            let mut gs = Vec::with_capacity(inputs.len());
            for t in inputs {
                let len = t.shape()[*axis];
                gs.push(Some(grad.narrow(*axis as isize, start, len)?));
                start += len;
            }
            gs
        }
        Op::Take { input, positions } => {
            let mut dx = vec![T::zero(); input.numel()];
            for (&p, &g) in positions.iter().zip(grad.values().iter()) {
                dx[p] += g;
            }
            vec![Some(Tensor::from_contiguous(dx, input.shape()))]
        }
        Op::Custom(c) => c.backward(grad)?,
    })
}

/// Gradients of the two operands of a binary op (`None` where not needed).
type GradPair<T> = (Option<Tensor<T>>, Option<Tensor<T>>);

/// Which operands' values the derivative of `op` reads, given which operands need a
/// gradient: the op record keeps only those (the others as graph handles).
pub(crate) fn binary_operands_read(op: BinaryOp, wa: bool, wb: bool) -> (bool, bool) {
    match op {
        BinaryOp::Add | BinaryOp::Sub => (false, false),
        // da = g·b, db = g·a.
        BinaryOp::Mul => (wb, wa),
        // da = g/b, db = −g·a/b².
        BinaryOp::Div => (wb, wa || wb),
        BinaryOp::Maximum | BinaryOp::Minimum => (wa || wb, wa || wb),
    }
}

/// Gradients of an elementwise binary op, computed only for operands that need them; reads
/// only the operands [`binary_operands_read`] says are kept.
fn binary_grads<T: Element>(
    op: BinaryOp,
    a: &Tensor<T>,
    b: &Tensor<T>,
    g: &Tensor<T>,
) -> GradPair<T> {
    let (wa, wb) = (a.requires_grad(), b.requires_grad());
    let shape = g.shape();
    let gv = g.values();
    // Generic (not `dyn`) so every rule's loop is compiled on its own and vectorises.
    fn map2<T: Element>(shape: &[usize], g: &[T], x: &[T], rule: impl Fn(T, T) -> T) -> Tensor<T> {
        let d = g.iter().zip(x).map(|(&g, &x)| rule(g, x)).collect();
        Tensor::from_contiguous(d, shape)
    }
    fn map3<T: Element>(
        shape: &[usize],
        g: &[T],
        (a, b): (&[T], &[T]),
        rule: impl Fn(T, T, T) -> T,
    ) -> Tensor<T> {
        let d = g
            .iter()
            .zip(a.iter().zip(b))
            .map(|(&g, (&a, &b))| rule(g, a, b))
            .collect();
        Tensor::from_contiguous(d, shape)
    }
    let half = T::from_f64(0.5);
    // d max(a,b)/da: 1 where a > b, 1/2 at ties, 0 elsewhere (minimum mirrors it).
    let pick = move |x: T, y: T, g: T| {
        if x > y {
            g
        } else if x == y {
            g * half
        } else {
            T::zero()
        }
    };
    match op {
        // Gradients of add/sub pass straight through (g itself, no copy).
        BinaryOp::Add => (wa.then(|| g.clone()), wb.then(|| g.clone())),
        BinaryOp::Sub => (wa.then(|| g.clone()), wb.then(|| g.neg())),
        BinaryOp::Mul => (
            wa.then(|| map2(shape, &gv, &b.values(), |g, b| g * b)),
            wb.then(|| map2(shape, &gv, &a.values(), |g, a| g * a)),
        ),
        BinaryOp::Div => (
            wa.then(|| map2(shape, &gv, &b.values(), |g, b| g / b)),
            wb.then(|| {
                map3(shape, &gv, (&a.values(), &b.values()), |g, a, b| {
                    -g * a / (b * b)
                })
            }),
        ),
        BinaryOp::Maximum | BinaryOp::Minimum => {
            let (av, bv) = (a.values(), b.values());
            let v = (&av[..], &bv[..]);
            if op == BinaryOp::Maximum {
                (
                    wa.then(|| map3(shape, &gv, v, |g, a, b| pick(a, b, g))),
                    wb.then(|| map3(shape, &gv, v, |g, a, b| pick(b, a, g))),
                )
            } else {
                (
                    wa.then(|| map3(shape, &gv, v, |g, a, b| pick(b, a, g))),
                    wb.then(|| map3(shape, &gv, v, |g, a, b| pick(a, b, g))),
                )
            }
        }
    }
}

/// `dA = G·Bᵀ`, `dB = Aᵀ·G`, with transposes as strided views (no copies).
fn matmul_grads<T: Element>(a: &Tensor<T>, b: &Tensor<T>, g: &Tensor<T>) -> Result<GradPair<T>> {
    let ga = if a.requires_grad() {
        Some(g.matmul(&b.transpose(-2, -1)?)?)
    } else {
        None
    };
    // A 2-D B stored transposed (a linear layer's `Wᵀ`, a view of the row-major `W`) gets
    // its gradient as `(Gᵀ·A)ᵀ`: the same sums, computed in `W`'s own layout, so that the
    // parameter's gradient comes out row-major. As `Aᵀ·G` it came out as a transposed view,
    // which every reader (the optimizer each step) gathered element by element.
    let transposed_rhs = b.ndim() == 2 && !b.is_contiguous() && b.transpose(0, 1)?.is_contiguous();
    let gb = if !b.requires_grad() {
        None
    } else if a.ndim() == 3 && b.ndim() == 2 {
        // B was shared by every batch item: fold the batch into the rows.
        let (bs, m, k) = (a.shape()[0], a.shape()[1], a.shape()[2]);
        let n = b.shape()[1];
        let a2 = a.reshape(&[bs * m, k])?;
        let g2 = g.reshape(&[bs * m, n])?;
        Some(if transposed_rhs {
            g2.transpose(0, 1)?.matmul(&a2)?.transpose(0, 1)?
        } else {
            a2.transpose(0, 1)?.matmul(&g2)?
        })
    } else if transposed_rhs {
        Some(g.transpose(0, 1)?.matmul(a)?.transpose(0, 1)?)
    } else {
        Some(a.transpose(-2, -1)?.matmul(g)?)
    };
    Ok((ga, gb))
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;

    /// A linear layer's `x·Wᵀ` (2-D and 3-D `x`) gives `W` a row-major gradient equal to
    /// the closed form `Gᵀ·x` (summed over the batch for 3-D), not a transposed view.
    #[test]
    fn transposed_weight_gets_a_row_major_gradient() {
        let w = rand_input(&[3, 4], 71);
        for x_shape in [vec![5, 4], vec![2, 5, 4]] {
            let x = rand_input(&x_shape, 72);
            let y = x.matmul(&w.transpose(0, 1).unwrap()).unwrap();
            let c = rand_input(y.shape(), 73);
            let grads = y.mul(&c).unwrap().sum_all().backward().unwrap();
            let gw = grads.get(&w).unwrap();
            assert!(gw.is_contiguous(), "{x_shape:?}");
            let rows = x.numel() / 4;
            let (xv, cv) = (x.to_vec(), c.to_vec());
            let mut want = vec![0.0; 12];
            for r in 0..rows {
                for o in 0..3 {
                    for i in 0..4 {
                        want[o * 4 + i] += cv[r * 3 + o] * xv[r * 4 + i];
                    }
                }
            }
            assert_close(&gw.to_vec(), &want, 1e-12);
        }
    }

    #[test]
    fn op_records_keep_only_the_buffers_their_rules_read() {
        let w = || rand_input_away_from_zero(&[3, 4], 3, 0.2);
        // An intermediate `a = 2w`: is its buffer kept by the op that reads it?
        let kept = |f: &dyn Fn(&Tensor<f64>) -> Tensor<f64>| {
            storage_outlives_its_tensor(w().mul_scalar(2.0), f)
        };
        // Derivatives of the output, of a constant, or of the shape only: freed.
        assert!(!kept(&|a| a.exp()));
        assert!(!kept(&|a| a.relu()));
        assert!(!kept(&|a| a.sigmoid()));
        assert!(!kept(&|a| a.neg()));
        assert!(!kept(&|a| a.sum(&[1], false).unwrap()));
        // (A view shares its input's storage, so only a view that is itself consumed frees it.)
        assert!(!kept(&|a| a
            .transpose(0, 1)
            .unwrap()
            .sum(&[0], false)
            .unwrap()));
        assert!(!kept(&|a| a.add(&Tensor::ones(&[3, 4])).unwrap()));
        assert!(!kept(&|a| a.mul(&Tensor::ones(&[3, 4])).unwrap()));
        // Derivatives of the input: kept.
        assert!(kept(&|a| a.abs().add_scalar(1.0).log()));
        assert!(kept(&|a| a.abs()));
        // Products: an operand is kept when the other needs a gradient.
        assert!(kept(&|a| a.mul(&rand_input(&[3, 4], 5)).unwrap()));
        assert!(kept(&|a| a.matmul(&rand_input(&[4, 2], 5)).unwrap()));
        assert!(!kept(&|a| a.matmul(&Tensor::ones(&[4, 2])).unwrap()));
    }

    /// A node reached by several paths sums its gradients in place only where it owns the
    /// sum: the seed the caller holds, a gradient two inputs share and views of it stay
    /// unchanged, and the sum is the analytic one.
    #[test]
    fn gradient_sums_change_no_tensor_held_elsewhere() {
        let x = rand_input(&[4, 5], 7);
        let flat = |t: &Tensor<f64>| t.reshape(&[20]).unwrap();
        // x reached through two reshapes (whose gradients are views of the seed's values),
        // through exp (a buffer of its own) and through `x · 3`.
        let y = flat(&x)
            .add(&flat(&x))
            .unwrap()
            .add(&flat(&x.exp()))
            .unwrap()
            .add(&flat(&x.mul_scalar(3.0)))
            .unwrap();
        let seed = rand_input(&[20], 8).detach();
        let before = seed.to_vec();
        let grads = y.backward_with(&seed).unwrap();
        let want: Vec<f64> = x
            .to_vec()
            .iter()
            .zip(&before)
            .map(|(x, s)| s * (x.exp() + 5.0))
            .collect();
        assert_close(&grads.get(&x).unwrap().to_vec(), &want, 1e-12);
        assert_eq!(seed.to_vec(), before, "the seed changed");
    }
}
