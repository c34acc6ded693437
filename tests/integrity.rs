//! Nothing silently wrong: each case is something a user can type that used to exit 0
//! while something was wrong (issue 23), run through the binary as the user runs it, with
//! what the user now sees.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tensorgrad");

/// What a command ended with.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `tensorgrad train <args>` on the bundled MNIST, 1 thread.
fn train(args: &[&str]) -> Ran {
    run(&[&["train", "--threads", "1", "--quiet"][..], args].concat())
}

fn run(args: &[&str]) -> Ran {
    let out = Command::new(BIN).args(args).output().unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// IDX bytes: magic for unsigned bytes with `dims.len()` dimensions, sizes, data.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

/// An MNIST-shaped IDX directory: `train` images of 28×28 (pixels from `pixel(i, p)`),
/// labels `i % 10`, and 20 test images.
fn idx_dir(dir: &Path, train: u32, pixel: &dyn Fn(usize, usize) -> u8) -> PathBuf {
    let images = |n: u32| -> Vec<u8> {
        (0..n as usize)
            .flat_map(|i| (0..784).map(move |p| (i, p)))
            .map(|(i, p)| pixel(i, p))
            .collect()
    };
    let labels = |n: u32| -> Vec<u8> { (0..n).map(|i| (i % 10) as u8).collect() };
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    write(
        "train-images-idx3-ubyte",
        idx(&[train, 28, 28], &images(train)),
    );
    write("train-labels-idx1-ubyte", idx(&[train], &labels(train)));
    write("t10k-images-idx3-ubyte", idx(&[20, 28, 28], &images(20)));
    write("t10k-labels-idx1-ubyte", idx(&[20], &labels(20)));
    dir.to_path_buf()
}

/// A small linear model on 500 training and 200 test images of the bundled MNIST.
const LINEAR_500: [&str; 6] = [
    "--model",
    "linear",
    "--train-limit",
    "500",
    "--test-limit",
    "200",
];

/// A 2-epoch `LINEAR_500` run stopped after its first epoch, in `dir`.
fn half_trained(dir: &Path) {
    let r = train(
        &[
            &LINEAR_500[..],
            &["--epochs", "2", "--stop-after", "1", "--out", s(dir)],
        ]
        .concat(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn non_finite_loss_options_are_refused_naming_the_flag_or_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("never");
    for (loss, flag, value) in [
        ("lgl-inr", "--beta", "nan"),
        ("lgl-inr", "--beta", "inf"),
        ("focal", "--gamma", "inf"),
        ("focal", "--alpha", "nan"),
        ("focal-sigmoid", "--alpha", "nan"),
        ("sml", "--label-smoothing", "nan"),
        ("sml", "--logit-adjust", "inf"),
    ] {
        let r = train(&["--loss", loss, flag, value, "--out", s(&out)]);
        assert_eq!(r.code, 1, "{loss} {flag} {value}: {}", r.stderr);
        assert!(
            r.stderr.starts_with(&format!("error: {flag}: ")),
            "{loss} {flag} {value}: {}",
            r.stderr
        );
        assert!(!out.exists(), "nothing is written for a refused option");
    }
    // A negative learning rate reaches the range check that names the flag.
    let r = train(&["--lr", "-1", "--out", s(&out)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("error: --lr: "), "{}", r.stderr);
    // α = ∞ is in the alpha-loss's range: it trains, and config.json reads back "inf".
    let r = train(&[
        "--loss",
        "alpha-loss",
        "--alpha",
        "inf",
        "--model",
        "linear",
        "--epochs",
        "1",
        "--train-limit",
        "500",
        "--test-limit",
        "200",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let config = json(&out.join("config.json"));
    assert_eq!(config["train"]["loss"]["alpha"], "inf");
    // …and the run reads back: eval accepts it.
    let r = run(&["eval", "--checkpoint", s(&out)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn empty_training_sets_and_emptied_classes_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = idx_dir(tmp.path(), 0, &|_, _| 0);
    let out = tmp.path().join("out");
    let r = train(&["--data-dir", s(&data), "--out", s(&out)]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("the training set holds no image"),
        "{}",
        r.stderr
    );
    assert!(!out.join("model.safetensors").exists());
    // A limit that leaves a class without an image after an imbalance profile: refused,
    // naming the class and the options.
    let r = train(&[
        "--imbalance",
        "longtail:100",
        "--train-limit",
        "30",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("--train-limit") && r.stderr.contains("hold no image of class"),
        "{}",
        r.stderr
    );
}

#[test]
fn constant_training_images_are_centred_not_scaled_and_the_run_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let data = idx_dir(tmp.path(), 100, &|_, _| 77);
    let out = tmp.path().join("out");
    let r = train(&[
        "--data-dir",
        s(&data),
        "--model",
        "linear",
        "--epochs",
        "1",
        "--allow-divergence",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("warning: channel 0 of the training images is constant"),
        "{}",
        r.stderr
    );
    let config = json(&out.join("config.json"));
    assert_eq!(config["normalization"]["std"][0], 1.0);
    assert_eq!(config["normalization"]["constant_channels"][0], 0);
    assert!(config["warnings"][0].as_str().unwrap().contains("constant"));
}

#[test]
fn a_diverged_run_is_not_reported_as_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let small = [
        "--model",
        "linear",
        "--train-limit",
        "2000",
        "--test-limit",
        "500",
    ];
    // Ends at chance with a finite loss: exit 3, the rule and the numbers said.
    let chance = tmp.path().join("chance");
    let r = train(
        &[
            &small[..],
            &["--lr", "1e3", "--epochs", "2", "--out", s(&chance)],
        ]
        .concat(),
    );
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("the run diverged: final balanced test accuracy")
            && r.stderr.contains("--allow-divergence"),
        "{}",
        r.stderr
    );
    let metrics = json(&chance.join("metrics.json"));
    assert!(metrics["divergence"]["rule"].is_string(), "{metrics}");
    // Allowed: exit 0, still recorded.
    let allowed = tmp.path().join("allowed");
    let r = train(
        &[
            &small[..],
            &[
                "--lr",
                "1e3",
                "--epochs",
                "2",
                "--allow-divergence",
                "--out",
                s(&allowed),
            ],
        ]
        .concat(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(json(&allowed.join("metrics.json"))["divergence"].is_object());

    // The learning rate grows 30-fold after epoch 1, and the loss with it: stopped at
    // epoch 2, epoch 1's checkpoint kept.
    let grew = tmp.path().join("grew");
    let run = |extra: &[&str]| {
        train(
            &[
                &small[..],
                &["--loss", "sml", "--lr", "0.1", "--schedule", "step:1,30"],
                &["--epochs", "2", "--out", s(&grew)],
                extra,
            ]
            .concat(),
        )
    };
    let r = run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the run diverged at epoch 2: training loss")
            && r.stderr.contains("exceeds 1.5 × the first epoch's")
            && r.stderr.contains("the checkpoint of epoch 1 is kept"),
        "{}",
        r.stderr
    );
    let metrics = json(&grew.join("metrics.json"));
    assert_eq!(metrics["epochs"].as_array().unwrap().len(), 1);
    // Resumed with a smaller learning rate: it finishes, and the change is in the history.
    let r = train(&["--resume", s(&grew), "--lr", "0.001"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let config = json(&grew.join("config.json"));
    assert_eq!(config["train"]["lr"], 0.001);
    let history = &config["history"][0];
    assert_eq!(history["resumed_at_epoch"], 1);
    assert_eq!(history["changed"]["lr"], serde_json::json!([0.1, 0.001]));
    assert_eq!(
        json(&grew.join("metrics.json"))["epochs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // NaN before the first epoch ends: the message says there is no checkpoint.
    let nan = tmp.path().join("nan");
    let r = train(
        &[
            &small[..],
            &["--loss", "sml", "--lr", "1e30", "--out", s(&nan)],
        ]
        .concat(),
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("at epoch 1")
            && r.stderr
                .contains("no epoch was completed, so the run has no checkpoint"),
        "{}",
        r.stderr
    );
}

#[test]
fn checkpoints_prove_their_integrity() {
    use tensorgrad::train::checkpoint::{decode_checkpoint, decode_unverified, save_checkpoint};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    half_trained(&dir);
    let path = dir.join("model.safetensors");
    let good = std::fs::read(&path).unwrap();
    // Every tensor's bytes: one flipped bit anywhere in the data is refused by eval,
    // audit and resume, naming the tensor.
    let ck = decode_checkpoint(&good).unwrap();
    let header = 8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut names: Vec<&str> = ck.tensors.iter().map(|t| t.0.as_str()).collect();
    names.sort();
    let first_tensor = names[0];
    for (at, command) in [
        (header, vec!["eval", "--checkpoint", s(&dir)]),
        (good.len() - 1, vec!["audit", "--checkpoint", s(&dir)]),
        (header + 4, vec!["train", "--resume", s(&dir), "--quiet"]),
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let r = run(&command);
        assert_eq!(r.code, 1, "{command:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("its bytes do not match the SHA-256"),
            "{command:?}: {}",
            r.stderr
        );
    }
    let mut bad = good.clone();
    bad[header] ^= 0x80;
    let e = decode_checkpoint(&bad).unwrap_err();
    assert!(e.starts_with(&format!("tensor {first_tensor}:")), "{e}");
    // Metadata edited (the epoch count): refused.
    let text = String::from_utf8_lossy(&good[8..header]).to_string();
    let edited = text.replacen("\"epoch\":\"1\"", "\"epoch\":\"2\"", 1);
    assert_ne!(edited, text, "the header holds the epoch as written");
    let mut bad = good.clone();
    bad[8..header].copy_from_slice(edited.as_bytes());
    std::fs::write(&path, &bad).unwrap();
    let r = run(&["eval", "--checkpoint", s(&dir)]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("does not match the SHA-256"),
        "{}",
        r.stderr
    );
    // A file without digests (an older version, or another program's) is not trusted.
    let mut table: serde_json::Value = serde_json::from_str(&text).unwrap();
    table["__metadata__"]
        .as_object_mut()
        .unwrap()
        .remove("integrity")
        .unwrap();
    let table = table.to_string();
    let mut plain = (table.len() as u64).to_le_bytes().to_vec();
    plain.extend(table.as_bytes());
    plain.extend(&good[header..]);
    std::fs::write(&path, &plain).unwrap();
    let r = run(&["eval", "--checkpoint", s(&dir)]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no integrity digests"), "{}", r.stderr);
    // Read without checks, and saved by the library, it has them again.
    let unverified = decode_unverified(&plain).unwrap();
    save_checkpoint(&path, &unverified).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), good);
    let r = run(&["train", "--resume", s(&dir), "--quiet", "--threads", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_checkpoint_without_its_optimizer_state_does_not_resume() {
    use tensorgrad::train::checkpoint::{load_checkpoint, save_checkpoint, OPTIMIZER_PREFIX};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    half_trained(&dir);
    let path = dir.join("model.safetensors");
    let mut ck = load_checkpoint(&path).unwrap();
    ck.tensors.retain(|t| !t.0.starts_with(OPTIMIZER_PREFIX));
    save_checkpoint(&path, &ck).unwrap();
    let r = run(&["train", "--resume", s(&dir), "--quiet"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("no optimizer state optimizer.momentum_buffer.")
            && r.stderr.contains("silently restart the optimizer"),
        "{}",
        r.stderr
    );
}

#[test]
fn resume_records_what_changed_and_leaves_a_finished_run_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let r = train(&[&LINEAR_500[..], &["--epochs", "1", "--out", s(&dir)]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let config = json(&dir.join("config.json"));
    // An MNIST run records no fields of the image-folder data set.
    assert!(config["train"].get("channels").is_none(), "{config}");
    assert!(config["train"].get("image_size").is_none(), "{config}");
    assert_eq!(config["ranks"], 1);
    // Resuming the finished run to its own length rewrites nothing.
    let files = [
        "metrics.json",
        "config.json",
        "model.safetensors",
        "loss.png",
    ];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    let r = run(&["train", "--resume", s(&dir), "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("test accuracy"), "{}", r.stdout);
    for (f, b) in files.iter().zip(&before) {
        assert_eq!(&std::fs::read(dir.join(f)).unwrap(), b, "{f} was rewritten");
    }
    // A resume to more epochs records the new count and the change.
    let r = run(&["train", "--resume", s(&dir), "--epochs", "2", "--quiet"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let config = json(&dir.join("config.json"));
    assert_eq!(config["train"]["epochs"], 2);
    assert_eq!(
        config["history"][0]["changed"]["epochs"],
        serde_json::json!([1, 2])
    );
    // A run recorded as trained on two ranks, resumed on one: refused for a loss that
    // depends on the split, accepted and recorded with the flag.
    let mut config = json(&dir.join("config.json"));
    config["ranks"] = 2.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let r = run(&["train", "--resume", s(&dir), "--epochs", "3", "--quiet"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("ranks") && r.stderr.contains("--allow-rank-change"),
        "{}",
        r.stderr
    );
    let r = run(&[
        "train",
        "--resume",
        s(&dir),
        "--epochs",
        "3",
        "--allow-rank-change",
        "--quiet",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let config = json(&dir.join("config.json"));
    assert_eq!(config["ranks"], 1);
    let last = config["history"].as_array().unwrap().last().unwrap();
    assert_eq!(last["changed"]["ranks"], serde_json::json!([2, 1]));
}
