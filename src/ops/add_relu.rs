//! `relu(a + b)` as one op: the join of a residual block. The unfused pair writes the sum,
//! reads it back for the rectifier and writes again, and its records keep the ReLU's output
//! besides; fused, the sum is rectified where it is computed, and backward masks the
//! gradient by the output's sign and hands the same masked gradient to both inputs (the
//! derivative of `a + b` is the identity for each). Values and gradients are bitwise those
//! of [`Tensor::add`] followed by [`Tensor::relu`], which is the readable reference.

use crate::autograd::CustomOp;
use crate::error::{Result, TensorError};
use crate::kernels::elementwise::zip_elements;
use crate::memory::SharedBuffer;
use crate::ops::unary::relu::{relu_derivative, relu_value};
use crate::tensor::{Element, Tensor};
use std::sync::Arc;

/// The record of `relu(a + b)`: the inputs' graph handles and the output, whose sign
/// masks the gradient.
struct AddRelu<T: Element> {
    a: Tensor<T>,
    b: Tensor<T>,
    output: SharedBuffer<T>,
}

impl<T: Element> CustomOp<T> for AddRelu<T> {
    fn name(&self) -> &'static str {
        "add+relu"
    }

    fn inputs(&self) -> Vec<&Tensor<T>> {
        vec![&self.a, &self.b]
    }

    fn kept_buffers(&self) -> Vec<(usize, usize)> {
        vec![(
            self.output.as_ptr() as usize,
            std::mem::size_of_val(&self.output[..]),
        )]
    }

    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>> {
        // As the ReLU's rule computes it: the gradient times the derivative (1 where the
        // output is positive, else 0), so a blocked negative gradient is −0 there too.
        let masked = zip_elements(&grad.values(), &self.output, |g, y| g * relu_derivative(y));
        let masked = Tensor::from_contiguous(masked, grad.shape());
        let for_a = self.a.requires_grad().then(|| masked.clone());
        let for_b = self.b.requires_grad().then_some(masked);
        Ok(vec![for_a, for_b])
    }
}

impl<T: Element> Tensor<T> {
    /// `relu(self + other)` for tensors of one shape, as one op (values and gradients
    /// bitwise those of `add` then `relu`); an error for different shapes (no broadcasting).
    ///
    /// ```
    /// use tensorgrad::Tensor;
    ///
    /// let a = Tensor::<f64>::from_vec(vec![1.0, -2.0, 0.5], &[3])?.with_grad();
    /// let b = Tensor::<f64>::from_vec(vec![1.0, 1.0, -1.0], &[3])?.with_grad();
    /// let y = a.add_relu(&b)?;
    /// assert_eq!(y.to_vec(), vec![2.0, 0.0, 0.0]);
    /// let grads = y.sum_all().backward()?;
    /// assert_eq!(grads.get(&a).unwrap().to_vec(), vec![1.0, 0.0, 0.0]);
    /// assert_eq!(grads.get(&b).unwrap().to_vec(), vec![1.0, 0.0, 0.0]);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn add_relu(&self, other: &Tensor<T>) -> Result<Tensor<T>> {
        if self.shape() != other.shape() {
            return Err(TensorError::ShapeMismatch {
                op: "add_relu",
                lhs: self.shape().to_vec(),
                rhs: other.shape().to_vec(),
            });
        }
        // As `relu` computes it, on the sum `add` computes.
        let out = zip_elements(&self.values(), &other.values(), |x, y| relu_value(x + y));
        let out = Arc::new(out);
        let op = AddRelu {
            a: self.graph_handle(),
            b: other.graph_handle(),
            output: SharedBuffer::new(&out),
        };
        Tensor::from_custom_op_storage(out, self.shape(), Box::new(op))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;

    fn bits(t: &Tensor<f64>) -> Vec<u64> {
        t.to_vec().iter().map(|v| v.to_bits()).collect()
    }

    /// Values and gradients bitwise those of `add` then `relu`, for two inputs and for one
    /// input used twice (a diamond: both gradients land on the same node).
    #[test]
    fn add_relu_equals_add_then_relu_exactly() {
        let a = rand_input(&[3, 4, 5], 1).detach().with_grad();
        let b = rand_input(&[3, 4, 5], 2).detach().with_grad();
        let r = rand_input(&[3, 4, 5], 3).detach();
        let fused = a.add_relu(&b).unwrap();
        let plain = a.add(&b).unwrap().relu();
        assert_eq!(bits(&fused), bits(&plain));
        assert!(fused.to_vec().contains(&0.0) && fused.to_vec().iter().any(|&v| v > 0.0));
        let gf = fused.mul(&r).unwrap().sum_all().backward().unwrap();
        let gp = plain.mul(&r).unwrap().sum_all().backward().unwrap();
        for t in [&a, &b] {
            assert_eq!(bits(gf.get(t).unwrap()), bits(gp.get(t).unwrap()));
        }
        let twice = a
            .add_relu(&a)
            .unwrap()
            .mul(&r)
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        let plain = a
            .add(&a)
            .unwrap()
            .relu()
            .mul(&r)
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        assert_eq!(bits(twice.get(&a).unwrap()), bits(plain.get(&a).unwrap()));
        // Only what requires a gradient gets one.
        let c = b.detach();
        let g = a.add_relu(&c).unwrap().sum_all().backward().unwrap();
        assert!(g.get(&a).is_some() && g.get(&c).is_none());
    }

    #[test]
    fn add_relu_gradcheck() {
        // Away from the kink at a + b = 0: a's values are kept away from −b.
        let b = rand_input(&[2, 3, 3], 12);
        let a = rand_input_away_from_zero(&[2, 3, 3], 11, 0.05)
            .sub(&b)
            .unwrap();
        assert_gradcheck(|t| t[0].add_relu(&t[1]), &[a, b]);
    }

    #[test]
    fn add_relu_refuses_different_shapes() {
        let e = Tensor::<f32>::ones(&[2, 3])
            .add_relu(&Tensor::ones(&[3]))
            .unwrap_err();
        assert!(e.to_string().contains("add_relu"), "{e}");
    }
}
