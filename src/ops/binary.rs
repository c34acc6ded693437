//! Elementwise binary ops with NumPy broadcasting.
//!
//! Operands are first broadcast with [`Tensor::broadcast_to`], itself a recorded op,
//! so the gradient of a broadcast operand is summed back to its shape by that op's rule.

use crate::autograd::{binary_operands_read, BinaryOp, Op};
use crate::error::Result;
use crate::tensor::{broadcast_shapes, for_each_run_zip, Element, Layout, Tensor};

/// Applies `f` to pairs of elements of two views of one shape, into a row-major buffer;
/// contiguous views on the rayon pool when large (a residual network's adds in inference
/// ran on one thread while the other waited).
pub(crate) fn zip_map<T: Element>(
    a: (&[T], &Layout),
    b: (&[T], &Layout),
    f: impl Fn(T, T) -> T + Sync + Send,
) -> Vec<T> {
    let (sa, la) = a;
    let (sb, lb) = b;
    let n = la.numel();
    if la.is_contiguous() && lb.is_contiguous() {
        let xa = &sa[la.offset()..la.offset() + n];
        let xb = &sb[lb.offset()..lb.offset() + n];
        return crate::kernels::elementwise::zip_elements(xa, xb, f);
    }
    let mut out = crate::memory::take(n);
    for_each_run_zip([la, lb], |[pa, pb], [ia, ib], run| match (ia, ib) {
        (1, 1) => out.extend(
            sa[pa..pa + run]
                .iter()
                .zip(&sb[pb..pb + run])
                .map(|(&x, &y)| f(x, y)),
        ),
        (1, 0) => out.extend(sa[pa..pa + run].iter().map(|&x| f(x, sb[pb]))),
        (0, 1) => out.extend(sb[pb..pb + run].iter().map(|&y| f(sa[pa], y))),
        _ => out.extend((0..run).map(|j| f(sa[pa + j * ia], sb[pb + j * ib]))),
    });
    out
}

/// [`zip_map`] with `op`'s function, chosen once per call: a loop per op, with no `match`
/// per element (which kept the loop scalar).
fn zip_op<T: Element>(a: (&[T], &Layout), b: (&[T], &Layout), op: BinaryOp) -> Vec<T> {
    macro_rules! loop_of {
        ($($op:ident),*) => {
            match op {
                $(BinaryOp::$op => zip_map(a, b, |x, y| BinaryOp::$op.apply(x, y)),)*
            }
        };
    }
    loop_of!(Add, Sub, Mul, Div, Maximum, Minimum)
}

impl BinaryOp {
    /// The forward scalar function.
    #[inline(always)]
    pub fn apply<T: Element>(self, a: T, b: T) -> T {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Maximum => {
                if a >= b {
                    a
                } else {
                    b
                }
            }
            BinaryOp::Minimum => {
                if a <= b {
                    a
                } else {
                    b
                }
            }
        }
    }
}

impl<T: Element> Tensor<T> {
    fn binary(&self, rhs: &Tensor<T>, op: BinaryOp) -> Result<Tensor<T>> {
        let shape = broadcast_shapes(op.name(), self.shape(), rhs.shape())?;
        let a = self.broadcast_to(&shape)?;
        let b = rhs.broadcast_to(&shape)?;
        let data = zip_op((a.storage(), a.layout()), (b.storage(), b.layout()), op);
        // Keep an operand's values only if the derivative rule reads them.
        let (read_a, read_b) = binary_operands_read(op, a.requires_grad(), b.requires_grad());
        let (lhs, rhs) = (a.kept_if(read_a), b.kept_if(read_b));
        Ok(Tensor::from_op_vec(
            data,
            &shape,
            Op::Binary { lhs, rhs, op },
        ))
    }

    /// `self + rhs`, broadcasting.
    /// ```
    /// use tensorgrad::Tensor;
    ///
    /// // NumPy broadcasting: [2, 3] + [3] adds the row to every row.
    /// let a = Tensor::<f64>::from_vec(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[2, 3])?;
    /// let b = Tensor::<f64>::from_vec(vec![10.0, 20.0, 30.0], &[3])?.with_grad();
    /// assert_eq!(a.add(&b)?.to_vec(), vec![10.0, 21.0, 32.0, 13.0, 24.0, 35.0]);
    /// // The broadcast operand's gradient is summed back to its shape.
    /// let grads = a.add(&b)?.sum_all().backward()?;
    /// assert_eq!(grads.get(&b).unwrap().to_vec(), vec![2.0, 2.0, 2.0]);
    /// assert!(a.mul(&Tensor::zeros(&[2])).is_err());
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn add(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Add)
    }

    /// `self - rhs`, broadcasting.
    pub fn sub(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Sub)
    }

    /// `self * rhs` elementwise, broadcasting.
    pub fn mul(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Mul)
    }

    /// `self / rhs` elementwise, broadcasting.
    pub fn div(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Div)
    }

    /// Elementwise maximum, broadcasting (ties split the gradient evenly).
    pub fn maximum(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Maximum)
    }

    /// Elementwise minimum, broadcasting (ties split the gradient evenly).
    pub fn minimum(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.binary(rhs, BinaryOp::Minimum)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;

    type BinFn = fn(&Tensor<f64>, &Tensor<f64>) -> crate::error::Result<Tensor<f64>>;
    const OPS: [(&str, BinFn); 6] = [
        ("add", Tensor::add),
        ("sub", Tensor::sub),
        ("mul", Tensor::mul),
        ("div", Tensor::div),
        ("maximum", Tensor::maximum),
        ("minimum", Tensor::minimum),
    ];

    #[test]
    fn values_match_scalar_definition() {
        let a = Tensor::<f64>::from_vec(vec![1.0, -2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let b = Tensor::<f64>::from_vec(vec![2.0, 5.0], &[2]).unwrap();
        assert_eq!(a.add(&b).unwrap().to_vec(), vec![3.0, 3.0, 5.0, 9.0]);
        assert_eq!(a.sub(&b).unwrap().to_vec(), vec![-1.0, -7.0, 1.0, -1.0]);
        assert_eq!(a.mul(&b).unwrap().to_vec(), vec![2.0, -10.0, 6.0, 20.0]);
        assert_eq!(a.div(&b).unwrap().to_vec(), vec![0.5, -0.4, 1.5, 0.8]);
        assert_eq!(a.maximum(&b).unwrap().to_vec(), vec![2.0, 5.0, 3.0, 5.0]);
        assert_eq!(a.minimum(&b).unwrap().to_vec(), vec![1.0, -2.0, 2.0, 4.0]);
    }

    #[test]
    fn gradcheck_same_shape_and_broadcast_either_side_and_both() {
        // (lhs shape, rhs shape): equal; rhs broadcast; lhs broadcast; both broadcast; scalar.
        let cases: [(&[usize], &[usize]); 5] = [
            (&[3, 4], &[3, 4]),
            (&[2, 3, 4], &[4]),
            (&[3, 1], &[2, 3, 5]),
            (&[4, 1, 3], &[1, 5, 1]),
            (&[], &[2, 3]),
        ];
        for (i, (sa, sb)) in cases.iter().enumerate() {
            for (name, op) in OPS {
                let a = rand_input(sa, 100 + i as u64);
                // Keep |b| away from 0 for div, and away from a for maximum/minimum ties.
                let b = rand_input_away_from_zero(sb, 200 + i as u64, 0.3);
                let r = crate::gradcheck(
                    |t| op(&t[0], &t[1]),
                    &[a, b],
                    &crate::GradcheckOptions::default(),
                );
                assert!(r.is_ok(), "{name} {sa:?} {sb:?}: {}", r.unwrap_err());
            }
        }
    }

    #[test]
    fn maximum_splits_gradient_at_ties() {
        let a = Tensor::<f64>::from_vec(vec![1.0, 2.0], &[2])
            .unwrap()
            .with_grad();
        let b = Tensor::<f64>::from_vec(vec![1.0, 3.0], &[2])
            .unwrap()
            .with_grad();
        let g = a.maximum(&b).unwrap().sum_all().backward().unwrap();
        assert_eq!(g.get(&a).unwrap().to_vec(), vec![0.5, 0.0]);
        assert_eq!(g.get(&b).unwrap().to_vec(), vec![0.5, 1.0]);
    }

    #[test]
    fn shape_mismatch_names_op_and_shapes() {
        let a = Tensor::<f32>::zeros(&[2, 3]);
        let b = Tensor::<f32>::zeros(&[4]);
        let msg = a.mul(&b).unwrap_err().to_string();
        assert!(
            msg.contains("mul") && msg.contains("[2, 3]") && msg.contains("[4]"),
            "{msg}"
        );
    }

    #[test]
    fn strided_operands_give_the_same_values() {
        let a = rand_input(&[3, 4], 1);
        let b = rand_input(&[4, 3], 2);
        let bt = b.transpose(0, 1).unwrap();
        assert!(!bt.is_contiguous());
        let via_view = a.mul(&bt).unwrap().to_vec();
        let via_copy = a.mul(&bt.contiguous()).unwrap().to_vec();
        assert_eq!(via_view, via_copy);
    }
}
