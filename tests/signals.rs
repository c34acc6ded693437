//! The command line under SIGINT: the step in progress finishes, a checkpoint is written,
//! the message says how to resume, and resuming ends bitwise where an uninterrupted run
//! ends.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn tensorgrad(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tensorgrad"));
    c.arg("train")
        .args([
            "--epochs",
            "1",
            "--train-limit",
            "12800",
            "--test-limit",
            "200",
        ])
        .args(["--threads", "2", "--quiet"])
        .args(args);
    c
}

fn tensors(dir: &Path) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    let ck = tensorgrad::train::load_checkpoint(&dir.join("model.safetensors")).unwrap();
    ck.tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().map(|x| x.to_bits()).collect()))
        .collect()
}

#[test]
fn sigint_checkpoints_mid_epoch_and_resume_is_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let (cut, whole) = (tmp.path().join("cut"), tmp.path().join("whole"));
    // Started as a program, not through `cargo run` (which the test harness's CARGO
    // would otherwise suggest): the hint names the program as it was invoked.
    let child = tensorgrad(&["--out", cut.to_str().unwrap()])
        .env_remove("CARGO")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once training is under way: config.json is written just before the
    // first step; the epoch then takes a few hundred steps.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cut.join("config.json").exists() {
        assert!(Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted at epoch 1, batch"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "resume with: {} train --resume {}",
            env!("CARGO_BIN_EXE_tensorgrad"),
            cut.display()
        )),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped after one step"
    );
    let ck = tensorgrad::train::load_checkpoint(&cut.join("model.safetensors")).unwrap();
    assert_eq!(ck.metadata["epoch"], "0");
    assert!(ck.metadata.contains_key("partial_epoch"));
    // Resume, and compare with a run that was never interrupted.
    let status = Command::new(env!("CARGO_BIN_EXE_tensorgrad"))
        .args(["train", "--resume", cut.to_str().unwrap(), "--quiet"])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(tensorgrad(&["--out", whole.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    assert!(
        tensors(&cut) == tensors(&whole),
        "resumed parameters differ"
    );
}
