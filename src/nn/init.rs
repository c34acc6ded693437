//! Seeded weight initialisers, with PyTorch's defaults for `Linear` and `Conv2d`.

use crate::tensor::{Element, Tensor};
use rand::Rng;

/// Kaiming-uniform with negative slope `a`: `U(−b, b)`, `b = √(6 / ((1 + a²)·fan_in))`.
/// With `a = √5` (PyTorch's default for Linear and Conv2d) `b = 1/√fan_in`.
pub fn kaiming_uniform<T: Element>(
    shape: &[usize],
    fan_in: usize,
    a: f64,
    rng: &mut impl Rng,
) -> Tensor<T> {
    let bound = (6.0 / ((1.0 + a * a) * fan_in as f64)).sqrt();
    Tensor::uniform(shape, -bound, bound, rng)
}

/// Kaiming-normal for ReLU networks: `N(0, 2 / fan)` (PyTorch's `kaiming_normal_` with
/// `nonlinearity='relu'`; torchvision's ResNets pass `mode='fan_out'`, so `fan` is
/// `c_out·kh·kw` there).
pub fn kaiming_normal<T: Element>(shape: &[usize], fan: usize, rng: &mut impl Rng) -> Tensor<T> {
    use rand_distr::{Distribution, Normal};
    let std = (2.0 / fan as f64).sqrt();
    let normal = Normal::new(0.0, std).expect("a finite positive std");
    let n = shape.iter().product();
    let values: Vec<T> = (0..n).map(|_| T::from_f64(normal.sample(rng))).collect();
    Tensor::from_vec(values, shape).expect("the shape's element count")
}

/// Xavier/Glorot-uniform: `U(−b, b)`, `b = gain·√(6 / (fan_in + fan_out))`.
pub fn xavier_uniform<T: Element>(
    shape: &[usize],
    fan_in: usize,
    fan_out: usize,
    gain: f64,
    rng: &mut impl Rng,
) -> Tensor<T> {
    let bound = gain * (6.0 / (fan_in + fan_out) as f64).sqrt();
    Tensor::uniform(shape, -bound, bound, rng)
}

/// PyTorch's default bias of a layer with `fan_in` inputs: `U(−1/√fan_in, 1/√fan_in)`.
pub fn default_bias<T: Element>(shape: &[usize], fan_in: usize, rng: &mut impl Rng) -> Tensor<T> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Tensor::uniform(shape, -bound, bound, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn bounds_match_pytorch_defaults() {
        let mut rng = StdRng::seed_from_u64(0);
        let w = kaiming_uniform::<f64>(&[200, 100], 100, 5f64.sqrt(), &mut rng).to_vec();
        let max = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(max <= 0.1 && max > 0.099, "{max}");
        let x = xavier_uniform::<f64>(&[50, 50], 50, 50, 1.0, &mut rng).to_vec();
        let max = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let bound = (6.0f64 / 100.0).sqrt();
        assert!(max <= bound && max > 0.95 * bound);
        // Kaiming-normal: the sample variance of 20,000 draws is 2/fan within 3%.
        let k = kaiming_normal::<f64>(&[200, 100], 50, &mut rng).to_vec();
        let var = k.iter().map(|v| v * v).sum::<f64>() / k.len() as f64;
        assert!((var / (2.0 / 50.0) - 1.0).abs() < 0.03, "{var}");
    }
}
