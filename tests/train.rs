//! End-to-end training runs on small subsets of the bundled MNIST: accuracy, resuming,
//! NaN handling, evaluation and audit of a saved run, and bad-data errors.

use std::path::{Path, PathBuf};
use tensorgrad::train::{
    audit_run, evaluate_run, load_checkpoint, Event, RunSummary, TrainConfig, TrainError,
};

fn bundled_mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist")
}

fn tiny(out: &Path, epochs: usize, train_limit: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        data_dir: Some(bundled_mnist()),
        train_limit: Some(train_limit),
        test_limit: Some(1000),
        out: Some(out.to_path_buf()),
        threads: Some(2),
        ..TrainConfig::default()
    }
}

/// Trains without reporting.
fn train(config: &TrainConfig) -> Result<RunSummary, TrainError> {
    tensorgrad::train::train(config, &mut |_| {})
}

#[test]
fn one_epoch_on_6000_images_learns_mnist() {
    let dir = tempfile::tempdir().unwrap();
    // Count what the run reports: one step event per batch, one epoch event.
    let (mut steps, mut epochs, mut last_images) = (0, 0, 0);
    let s = tensorgrad::train::train(&tiny(dir.path(), 1, 6000), &mut |e| match e {
        Event::Step(s) => {
            steps += 1;
            last_images = s.images;
        }
        Event::Epoch { record, .. } => {
            epochs += 1;
            assert_eq!(record.epoch, 1);
        }
        _ => {}
    })
    .unwrap();
    assert_eq!(
        (steps, epochs, last_images),
        (6000usize.div_ceil(64), 1, 6000)
    );
    // Defaults: lenet, lgl-inr, SGD 0.9, lr 0.01 cosine, batch 64.
    assert!(s.test.accuracy >= 0.85, "test accuracy {}", s.test.accuracy);
    for f in [
        "config.json",
        "metrics.json",
        "model.safetensors",
        "loss.png",
        "accuracy.png",
        "per_class_accuracy.png",
        "p_bar_train.png",
        "p_bar_test.png",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(config["train"]["seed"], 0);
    assert_eq!(config["threads"], 2);
    // The revision the binary was built from: this tree's, as git reports it, `-dirty`
    // with uncommitted changes to tracked files (or "unknown" outside git).
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"]).map_or("unknown".to_string(), |h| {
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        if dirty {
            format!("{h}-dirty")
        } else {
            h
        }
    });
    assert_eq!(config["git_revision"], head.as_str());
    assert_eq!(
        config["train"]["data_dir"],
        bundled_mnist().to_str().unwrap()
    );
    // The saved run evaluates to the same accuracy, and the audit runs and is written.
    let e = evaluate_run(dir.path(), None).unwrap();
    assert_eq!(e.accuracy, s.test.accuracy);
    let a = audit_run(dir.path(), None).unwrap();
    assert_eq!(a.rows.len(), 10);
    assert!(dir.path().join("audit.json").exists());
}

#[test]
fn resuming_gives_the_same_parameters_as_an_uninterrupted_run() {
    let straight = tempfile::tempdir().unwrap();
    train(&tiny(straight.path(), 2, 640)).unwrap();
    // The same 2-epoch run, interrupted after epoch 1, then resumed.
    let split = tempfile::tempdir().unwrap();
    let first = train(&TrainConfig {
        stop_after: Some(1),
        ..tiny(split.path(), 2, 640)
    })
    .unwrap();
    assert_eq!(first.epochs.len(), 1);
    let resume = TrainConfig {
        resume: Some(split.path().to_path_buf()),
        ..tiny(split.path(), 2, 640)
    };
    let resumed = train(&resume).unwrap();
    // Epoch 1 was not trained again: its record (with its wall time) is carried over.
    assert_eq!(resumed.epochs.len(), 2);
    assert_eq!(resumed.epochs[0], first.epochs[0]);
    let a = load_checkpoint(&straight.path().join("model.safetensors")).unwrap();
    let b = load_checkpoint(&split.path().join("model.safetensors")).unwrap();
    assert_eq!(a.metadata["epoch"], "2");
    assert_eq!(a.tensors.len(), b.tensors.len());
    for ((n1, _, v1), (n2, _, v2)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(n1, n2);
        let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(v1) == bits(v2), "{n1} differs after resuming");
    }
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    // The learning rate is multiplied by 1e30 after epoch 1: the loss blows up in epoch 2.
    let exploding = |out: &Path| TrainConfig {
        loss: tensorgrad::loss::LossOptions::new("sml".parse().unwrap()),
        schedule: "step:1,1e30".parse().unwrap(),
        ..tiny(out, 3, 320)
    };
    let dir = tempfile::tempdir().unwrap();
    match train(&exploding(dir.path())) {
        Err(TrainError::NonFinite { epoch, .. }) => assert_eq!(epoch, 2),
        other => panic!("expected a non-finite loss error, got {other:?}"),
    }
    // The checkpoint on disk is epoch 1's, byte for byte what a run stopped there writes.
    let reference = tempfile::tempdir().unwrap();
    train(&TrainConfig {
        stop_after: Some(1),
        ..exploding(reference.path())
    })
    .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        std::fs::read(reference.path().join("model.safetensors")).unwrap(),
        "the epoch-1 checkpoint is intact"
    );
}

#[test]
fn corrupt_data_is_a_typed_error_naming_the_file() {
    let data = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, data.path().join(f.file_name().unwrap())).unwrap();
    }
    // Truncate the test labels: gzip ends early.
    let labels = data.path().join("t10k-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &bytes[..bytes.len() / 2]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        data_dir: Some(data.path().to_path_buf()),
        ..tiny(out.path(), 1, 64)
    };
    let e = train(&cfg).unwrap_err();
    assert!(matches!(e, TrainError::Data(_)), "{e:?}");
    assert!(e.to_string().contains("t10k-labels-idx1-ubyte"), "{e}");
    let bad = TrainConfig {
        loss: tensorgrad::loss::LossOptions {
            beta: Some(-1.0),
            ..tensorgrad::loss::LossOptions::new("lgl-inr".parse().unwrap())
        },
        ..tiny(out.path(), 1, 64)
    };
    let e = train(&bad).unwrap_err();
    assert!(matches!(e, TrainError::Loss(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "loss option beta: -1 is not a finite number ≥ 0"
    );
    // No data directory: an error naming the data set, not a panic or a default.
    let none = TrainConfig {
        data_dir: None,
        ..tiny(out.path(), 1, 64)
    };
    assert_eq!(
        train(&none).unwrap_err().to_string(),
        "data set mnist: no data directory given"
    );
}

#[test]
fn run_directories_are_never_overwritten_or_mixed_up() {
    let dir = tempfile::tempdir().unwrap();
    train(&tiny(dir.path(), 1, 128)).unwrap();
    let first = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    // A second run into the same directory is refused; the first run is untouched.
    let e = train(&TrainConfig {
        seed: 1,
        ..tiny(dir.path(), 1, 128)
    })
    .unwrap_err();
    assert!(e.to_string().contains("is not empty"), "{e}");
    assert_eq!(
        std::fs::read(dir.path().join("model.safetensors")).unwrap(),
        first
    );
    // The same seed and configuration write byte-identical checkpoints.
    let again = tempfile::tempdir().unwrap();
    let same = train(&TrainConfig {
        out: Some(again.path().to_path_buf()),
        ..tiny(dir.path(), 1, 128)
    });
    same.unwrap();
    assert_eq!(
        std::fs::read(again.path().join("model.safetensors")).unwrap(),
        first
    );
    // A config.json of another run next to this model: refused by eval and resume.
    let other = tempfile::tempdir().unwrap();
    train(&TrainConfig {
        seed: 1,
        ..tiny(other.path(), 1, 128)
    })
    .unwrap();
    std::fs::copy(
        other.path().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let e = evaluate_run(dir.path(), None).unwrap_err().to_string();
    assert!(e.contains("does not belong to"), "{e}");
    // Overwriting is explicit.
    train(&TrainConfig {
        seed: 1,
        overwrite: true,
        ..tiny(dir.path(), 1, 128)
    })
    .unwrap();
    assert!(evaluate_run(dir.path(), None).is_ok());
}

#[test]
fn resume_checks_the_checkpoint_and_keeps_the_history() {
    use tensorgrad::train::save_checkpoint;
    let dir = tempfile::tempdir().unwrap();
    let first = train(&TrainConfig {
        stop_after: Some(1),
        ..tiny(dir.path(), 2, 128)
    })
    .unwrap();
    let ck_path = dir.path().join("model.safetensors");
    let good = load_checkpoint(&ck_path).unwrap();
    let resume = TrainConfig {
        resume: Some(dir.path().to_path_buf()),
        ..tiny(dir.path(), 2, 128)
    };
    // Optimizer state of the wrong length: refused, nothing trained.
    let mut bad = good.clone();
    for t in &mut bad.tensors {
        if t.0 == "optimizer.momentum_buffer.fc1.weight" {
            (t.1, t.2) = (vec![10], vec![0.0; 10]);
        }
    }
    save_checkpoint(&ck_path, &bad).unwrap();
    let e = train(&resume).unwrap_err().to_string();
    assert!(
        e.contains("has 10 values, parameter fc1.weight needs 400000"),
        "{e}"
    );
    // A tensor the model does not have: refused.
    let mut bad = good.clone();
    bad.tensors
        .push(("fc3.weight".into(), vec![2], vec![0.0; 2]));
    save_checkpoint(&ck_path, &bad).unwrap();
    let e = train(&resume).unwrap_err().to_string();
    assert!(
        e.contains("tensor fc3.weight is not part of the model"),
        "{e}"
    );
    // No epoch count: refused rather than restarting at epoch 0.
    let mut bad = good.clone();
    bad.metadata.remove("epoch");
    save_checkpoint(&ck_path, &bad).unwrap();
    let e = train(&resume).unwrap_err().to_string();
    assert!(e.contains("no epoch count"), "{e}");
    // metrics.json lost (as after a kill between the two writes) and a stale temporary
    // file: the history comes from the checkpoint, the temporary file is cleaned up.
    save_checkpoint(&ck_path, &good).unwrap();
    std::fs::remove_file(dir.path().join("metrics.json")).unwrap();
    std::fs::write(dir.path().join(".model.safetensors.tmp"), b"half a write").unwrap();
    let resumed = train(&resume).unwrap();
    assert_eq!(resumed.epochs.len(), 2);
    assert_eq!(resumed.epochs[0].train_loss, first.epochs[0].train_loss);
    assert_eq!(
        resumed.epochs[0].seconds, None,
        "the lost wall time is not invented"
    );
    assert!(!dir.path().join(".model.safetensors.tmp").exists());
}

#[test]
fn binary_pair_with_per_problem_weights_trains_and_audits() {
    // --loss lgl --class-weights inverse --weight-form pos-neg on a pair (one logit).
    let dir = tempfile::tempdir().unwrap();
    let mut loss = tensorgrad::loss::LossOptions::new("lgl".parse().unwrap());
    loss.class_weights = Some("inverse".parse().unwrap());
    loss.weight_form = Some("pos-neg".parse().unwrap());
    let s = train(&TrainConfig {
        loss,
        imbalance: "pair:4,9,10".parse().unwrap(),
        ..tiny(dir.path(), 1, 2000)
    })
    .unwrap();
    assert_eq!(s.train_class_counts.len(), 2);
    let a = audit_run(dir.path(), None).unwrap();
    assert_eq!(a.rows.len(), 1);
}

#[test]
fn stopping_mid_epoch_and_resuming_is_exact() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (cut, whole) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let stop = AtomicBool::new(false);
    let e = tensorgrad::train::train_until(&tiny(cut.path(), 2, 640), &stop, &mut |e| {
        if let Event::Step(s) = e {
            if s.epoch == 1 && s.batch == 3 {
                stop.store(true, Ordering::SeqCst);
            }
        }
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            TrainError::Interrupted {
                epoch: 2,
                batch: 4,
                ..
            }
        ),
        "{e:?}"
    );
    let resumed = train(&TrainConfig {
        resume: Some(cut.path().to_path_buf()),
        ..tiny(cut.path(), 2, 640)
    })
    .unwrap();
    let straight = train(&tiny(whole.path(), 2, 640)).unwrap();
    assert_eq!(resumed.epochs[1].train_loss, straight.epochs[1].train_loss);
    let a = load_checkpoint(&cut.path().join("model.safetensors")).unwrap();
    let b = load_checkpoint(&whole.path().join("model.safetensors")).unwrap();
    assert!(a.tensors == b.tensors, "resumed parameters differ");
}

#[test]
fn parameters_do_not_depend_on_the_thread_count() {
    let mut runs = Vec::new();
    for threads in [1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        train(&TrainConfig {
            threads: Some(threads),
            ..tiny(dir.path(), 1, 640)
        })
        .unwrap();
        runs.push(
            load_checkpoint(&dir.path().join("model.safetensors"))
                .unwrap()
                .tensors,
        );
    }
    for (threads, run) in [2, 3].iter().zip(&runs[1..]) {
        for ((name, _, a), (_, _, b)) in runs[0].iter().zip(run) {
            let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(a) == bits(b),
                "{name} differs between 1 and {threads} threads"
            );
        }
    }
}

/// A model the library does not know (a hand-written residual network) gets the whole
/// run machinery: run directory, checkpoint, resume, reopen and evaluation, with its name
/// recorded and checked.
#[test]
fn a_hand_written_residual_model_trains_resumes_and_reopens() {
    use rand::{rngs::StdRng, SeedableRng};
    use std::sync::atomic::AtomicBool;
    use tensorgrad::nn::{
        Architecture, Conv2d, GlobalAvgPool, Linear, Module, Relu, Residual, Sequential,
    };
    use tensorgrad::ops::conv::Conv2dConfig;
    use tensorgrad::train::{train_model_until, SavedRun};
    struct Tiny;
    impl Architecture for Tiny {
        fn name(&self) -> String {
            "tiny-residual".into()
        }
        fn build(
            &self,
            [c, _, _]: [usize; 3],
            outputs: usize,
            seed: u64,
        ) -> tensorgrad::Result<Box<dyn Module<f32>>> {
            let mut rng = StdRng::seed_from_u64(seed);
            let stem = Conv2dConfig::new(2, 1, 1);
            let same = Conv2dConfig::new(1, 1, 1);
            let body = Sequential::new()
                .push(
                    "conv1",
                    Conv2d::new(4, 4, 3, same, true, &mut rng).with_relu(),
                )
                .push("conv2", Conv2d::new(4, 4, 3, same, true, &mut rng));
            Ok(Box::new(
                Sequential::new()
                    .push("conv1", Conv2d::new(c, 4, 3, stem, true, &mut rng))
                    .push("relu", Relu)
                    .push("layer1", Residual::new(body).with_relu())
                    .push("avgpool", GlobalAvgPool)
                    .push("fc", Linear::new(4, outputs, true, &mut rng)),
            ))
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let config = TrainConfig {
        lr: 0.05,
        ..tiny(dir.path(), 2, 320)
    };
    let first = TrainConfig {
        stop_after: Some(1),
        ..config.clone()
    };
    train_model_until(&first, &Tiny, &stop, &mut |_| {}).unwrap();
    let resume = TrainConfig {
        resume: Some(dir.path().to_path_buf()),
        ..config
    };
    // Resuming it as a built-in model is refused, naming both.
    let wrong = train(&resume).unwrap_err().to_string();
    assert!(
        wrong.contains("tiny-residual") && wrong.contains("lenet"),
        "{wrong}"
    );
    let summary = train_model_until(&resume, &Tiny, &stop, &mut |_| {}).unwrap();
    assert_eq!(summary.epochs.len(), 2);
    assert!(summary.epochs[1].train_loss.is_finite());
    let ck = load_checkpoint(&dir.path().join("model.safetensors")).unwrap();
    let names: Vec<&str> = ck.tensors.iter().map(|(n, _, _)| n.as_str()).collect();
    assert!(names.contains(&"layer1.conv2.bias"), "{names:?}");
    let mut saved = SavedRun::open_with(dir.path(), None, &Tiny).unwrap();
    assert_eq!(saved.evaluate().unwrap().accuracy, summary.test.accuracy);
    assert!(evaluate_run(dir.path(), None).is_err());
}
