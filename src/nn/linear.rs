//! Fully connected layer, weight `[out, in]` as PyTorch.

use super::{init, weight_and_bias, weight_and_bias_mut, Module, TensorKind};
use crate::error::{Result, TensorError};
use crate::tensor::{Element, Tensor};
use rand::Rng;

/// `y = x·Wᵀ + b` with `W: [out, in]`, `b: [out]`.
pub struct Linear<T: Element> {
    /// Weight `[out_features, in_features]`.
    pub weight: Tensor<T>,
    /// Bias `[out_features]`, if any.
    pub bias: Option<Tensor<T>>,
}

impl<T: Element> Linear<T> {
    /// PyTorch's default initialisation (Kaiming-uniform with a = √5, matching bias bound).
    pub fn new(in_features: usize, out_features: usize, bias: bool, rng: &mut impl Rng) -> Self {
        let weight =
            init::kaiming_uniform(&[out_features, in_features], in_features, 5f64.sqrt(), rng)
                .with_grad();
        let bias = bias.then(|| init::default_bias(&[out_features], in_features, rng).with_grad());
        Linear { weight, bias }
    }
}

impl<T: Element> Module<T> for Linear<T> {
    fn kind(&self) -> &'static str {
        "linear"
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        if x.ndim() != 2 || x.shape()[1] != self.weight.shape()[1] {
            return Err(TensorError::ShapeMismatch {
                op: "linear",
                lhs: x.shape().to_vec(),
                rhs: self.weight.shape().to_vec(),
            });
        }
        // Wᵀ is a strided view: the GEMM reads it in place.
        let y = x.matmul(&self.weight.transpose(0, 1)?)?;
        match &self.bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    fn named_tensors(&self) -> Vec<(String, TensorKind, Tensor<T>)> {
        weight_and_bias(&self.weight, &self.bias)
    }

    fn named_tensors_mut(&mut self) -> Vec<(String, TensorKind, &mut Tensor<T>)> {
        weight_and_bias_mut(&mut self.weight, &mut self.bias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn gradcheck_linear_batch_one_and_more() {
        let mut rng = StdRng::seed_from_u64(0);
        let lin = Linear::<f64>::new(4, 3, true, &mut rng);
        for batch in [1, 5] {
            let inputs = [
                rand_input(&[batch, 4], 90),
                lin.weight.clone(),
                lin.bias.clone().unwrap(),
            ];
            assert_gradcheck(
                |t| {
                    let mut l = Linear {
                        weight: t[1].clone(),
                        bias: Some(t[2].clone()),
                    };
                    l.forward(&t[0])
                },
                &inputs,
            );
        }
    }

    #[test]
    fn names_and_shape_errors() {
        let mut rng = StdRng::seed_from_u64(0);
        let mut lin = Linear::<f32>::new(4, 3, true, &mut rng);
        let names: Vec<String> = lin.parameters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["weight", "bias"]);
        let e = lin
            .forward(&Tensor::zeros(&[2, 5]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linear") && e.contains("[2, 5]") && e.contains("[3, 4]"),
            "{e}"
        );
    }
}
