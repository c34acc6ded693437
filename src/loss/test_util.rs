//! Shared checks for the loss tests.

use super::Loss;
use crate::testing::*;
use crate::Tensor;

/// d loss / d logits (flattened) by autodiff.
pub fn grad_of(loss: &dyn Loss<f64>, z: &Tensor<f64>, labels: &[usize]) -> Vec<f64> {
    let z = z.detach().with_grad();
    let g = loss.forward(&z, labels).unwrap().backward().unwrap();
    g.get(&z).unwrap().to_vec()
}

/// Full gradcheck of `loss` with respect to random logits of `shape`.
pub fn check_loss(loss: &dyn Loss<f64>, shape: &[usize], labels: &[usize]) {
    let z = rand_input(shape, 7 + labels.len() as u64);
    assert_gradcheck(|t| loss.forward(&t[0], labels), &[z]);
}

/// Logits of ±100 and ±1e4 give finite losses and gradients in f32 and f64.
pub fn assert_stable<L: Loss<f32> + Loss<f64>>(loss: &L, k: usize) {
    for scale in [100.0, 1e4] {
        let b = 4;
        let vals: Vec<f64> = (0..b * k)
            .map(|i| {
                if (i * 7 + i / k).is_multiple_of(3) {
                    scale
                } else {
                    -scale
                }
            })
            .collect();
        let classes = if k == 1 { 2 } else { k };
        let labels: Vec<usize> = (0..b).map(|i| i % classes).collect();
        let z64 = Tensor::<f64>::from_f64s(&vals, &[b, k])
            .unwrap()
            .with_grad();
        let l64 = Loss::<f64>::forward(loss, &z64, &labels).unwrap();
        let g64 = l64.backward().unwrap();
        assert!(
            l64.item().is_finite(),
            "f64 loss at {scale}: {}",
            l64.item()
        );
        assert!(
            g64.get(&z64)
                .unwrap()
                .to_vec()
                .iter()
                .all(|v| v.is_finite()),
            "f64 grad at {scale}"
        );
        let z32 = Tensor::<f32>::from_f64s(&vals, &[b, k])
            .unwrap()
            .with_grad();
        let l32 = Loss::<f32>::forward(loss, &z32, &labels).unwrap();
        let g32 = l32.backward().unwrap();
        assert!(
            l32.item().is_finite(),
            "f32 loss at {scale}: {}",
            l32.item()
        );
        assert!(
            g32.get(&z32)
                .unwrap()
                .to_vec()
                .iter()
                .all(|v| v.is_finite()),
            "f32 grad at {scale}"
        );
    }
}
