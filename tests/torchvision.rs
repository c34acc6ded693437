//! tensorgrad's resnet18 and mobilenet-v2, trained for a few steps so that batch norm's
//! running statistics are not the defaults, load into torchvision's models with
//! `load_state_dict(strict=True)`, and resnet20 into the README's PyTorch class; PyTorch's
//! logits on the same real MNIST images equal ours to 1e-4 relative. Needs a Python with
//! torch and torchvision: `$TORCH_PYTHON`, else `../torch-venv/bin/python` (what
//! benches/compare/run.py creates); without one the test prints why and passes without
//! checking — unless `TENSORGRAD_REQUIRE_TORCH=1` (set by CI, which installs them), when a
//! missing PyTorch fails it.

use std::path::{Path, PathBuf};
use std::process::Command;
use tensorgrad::data::{load_idx_dir, Augment, Batches, Normalization};
use tensorgrad::nn::models::ModelKind;
use tensorgrad::nn::{Module, TensorKind};
use tensorgrad::train::{save_checkpoint, Checkpoint};
use tensorgrad::Tensor;

fn python_with_torch() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let candidates = [
        std::env::var_os("TORCH_PYTHON").map(PathBuf::from),
        Some(root.join("../torch-venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .args(["-c", "import torch, torchvision"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn save(path: &Path, tensors: Vec<(String, Vec<usize>, Vec<f32>)>) {
    let ck = Checkpoint {
        tensors,
        metadata: Default::default(),
    };
    save_checkpoint(path, &ck).unwrap();
}

#[test]
fn pytorch_loads_resnet18_mobilenet_v2_and_resnet20_strictly_with_equal_logits() {
    let Some(python) = python_with_torch() else {
        assert!(
            std::env::var_os("TENSORGRAD_REQUIRE_TORCH").is_none(),
            "TENSORGRAD_REQUIRE_TORCH is set but no Python with torch and torchvision was found"
        );
        println!("skipped: no Python with torch and torchvision (set TORCH_PYTHON or create ../torch-venv)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mnist =
        load_idx_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist")).unwrap();
    let norm = Normalization::of(&mnist.train);
    // 8 real test images, the grey channel repeated into RGB (torchvision's models take 3).
    let images = mnist.test.subset(&(0..8).collect::<Vec<_>>());
    let (grey, _) = Batches::new(&images, 8, None, 0, &norm, Augment::default())
        .next()
        .unwrap();
    let g = grey.to_vec();
    let mut rgb = Vec::with_capacity(g.len() * 3);
    for img in g.chunks(28 * 28) {
        for _ in 0..3 {
            rgb.extend_from_slice(img);
        }
    }
    let rgb = Tensor::<f32>::from_vec(rgb, &[8, 3, 28, 28]).unwrap();
    // The CIFAR ResNet takes the 1-channel images as they are.
    let models = [
        (ModelKind::Resnet18, rgb.clone()),
        (ModelKind::MobilenetV2, rgb),
        (ModelKind::Resnet20, grey),
    ];
    for (kind, x) in &models {
        let name = kind.as_str();
        let [c, h, w] = [x.shape()[1], x.shape()[2], x.shape()[3]];
        let mut model = kind.build::<f32>([c, h, w], 10, 0).unwrap();
        // Two training-mode forwards move the running statistics and the batch counts.
        for _ in 0..2 {
            model.forward(x).unwrap();
        }
        model.set_training(false);
        let logits = model.forward(x).unwrap();
        let tensors = model
            .named_tensors()
            .into_iter()
            .map(|(n, _, t): (String, TensorKind, Tensor<f32>)| (n, t.shape().to_vec(), t.to_vec()))
            .collect();
        save(&dir.path().join(format!("{name}.safetensors")), tensors);
        save(
            &dir.path().join(format!("{name}.input.safetensors")),
            vec![("x".into(), x.shape().to_vec(), x.to_vec())],
        );
        save(
            &dir.path().join(format!("{name}.logits.safetensors")),
            vec![("logits".into(), logits.shape().to_vec(), logits.to_vec())],
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pytorch/strict_load.py");
    let out = Command::new(python)
        .arg(script)
        .arg(dir.path())
        .args(models.iter().map(|(kind, _)| kind.as_str()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches(" ok").count(), models.len(), "{stdout}");
}
