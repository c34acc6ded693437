//! Data-parallel training over MPI (`--features mpi`; needs Open MPI's `mpirun`): two ranks
//! end where one process ends with the same global batches, up to the order of the
//! gradient sums; mismatched ranks are refused without hanging; a distributed run resumes.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tensorgrad");
/// LeNet (no batch norm, no dropout) with a plain mean loss, 20 global batches of 64.
const RUN: [&str; 12] = [
    "train",
    "--loss",
    "sml",
    "--epochs",
    "2",
    "--train-limit",
    "640",
    "--test-limit",
    "200",
    "--threads",
    "1",
    "--quiet",
];

/// `mpirun -np N tensorgrad …`.
fn mpirun(np: usize, args: &[&str]) -> Output {
    let mut all: Vec<String> = vec!["-np".into(), np.to_string(), BIN.into()];
    all.extend(args.iter().map(|s| s.to_string()));
    mpirun_raw(&all)
}

/// `mpirun …`, killed if it runs for more than a minute (a hang is a failure).
fn mpirun_raw(args: &[String]) -> Output {
    let mut child = Command::new("mpirun")
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "--bind-to",
            "none",
        ])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mpirun (Open MPI) is installed");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("mpirun {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn params(dir: &Path) -> Vec<(String, Vec<f32>)> {
    tensorgrad::train::load_checkpoint(&dir.join("model.safetensors"))
        .unwrap()
        .tensors
        .into_iter()
        .filter(|(n, _, _)| !n.starts_with("optimizer."))
        .map(|(n, _, v)| (n, v))
        .collect()
}

#[test]
fn two_ranks_match_one_process_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let single = Command::new(BIN)
        .args(RUN)
        .args(["--out", one.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        single.status.success(),
        "{}",
        String::from_utf8_lossy(&single.stderr)
    );
    let out = mpirun(
        2,
        &[&RUN[..], &["--distributed", "--out", two.to_str().unwrap()]].concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Only rank 0 reports: one summary line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("test accuracy").count(), 1, "{stdout}");
    let mut worst = 0f64;
    for ((name, a), (_, b)) in params(&one).iter().zip(params(&two)) {
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64));
        worst = worst.max(diff / scale);
        assert!(
            diff <= 1e-5 * scale,
            "{name}: max deviation {diff} (scale {scale})"
        );
    }
    eprintln!("largest relative deviation, 2 ranks vs 1 process: {worst:.2e}");
    // A distributed run stopped after epoch 1 and resumed ends where it ends straight.
    let cut = tmp.path().join("cut");
    let cut_s = cut.to_str().unwrap();
    let first = mpirun(
        2,
        &[
            &RUN[..],
            &["--distributed", "--stop-after", "1", "--out", cut_s],
        ]
        .concat(),
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // Rank 1 is given a directory that does not exist where it runs: rank 0 reads the run
    // and sends it, so no shared file system is needed.
    let resume = |dir: &str| -> Vec<String> {
        [
            "-np",
            "1",
            BIN,
            "train",
            "--distributed",
            "--resume",
            dir,
            "--quiet",
        ]
        .map(String::from)
        .to_vec()
    };
    let mut args = resume(cut_s);
    args.push(":".into());
    args.extend(resume("/nonexistent/elsewhere"));
    let resumed = mpirun_raw(&args);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        params(&cut) == params(&two),
        "resumed distributed run differs"
    );
}

#[test]
fn ranks_with_different_configurations_are_refused_without_hanging() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let rank = |seed: &str| {
        let mut v: Vec<String> = RUN.iter().map(|s| s.to_string()).collect();
        v.extend(
            [
                "--distributed",
                "--seed",
                seed,
                "--out",
                out.to_str().unwrap(),
            ]
            .map(String::from),
        );
        v
    };
    // MPMD: rank 0 with seed 0, rank 1 with seed 1.
    let mut args: Vec<String> = vec!["-np".into(), "1".into(), BIN.into()];
    args.extend(rank("0"));
    args.push(":".into());
    args.extend(["-np".into(), "1".into(), BIN.into()]);
    args.extend(rank("1"));
    let child = mpirun_raw(&args);
    assert!(!child.status.success());
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(stderr.contains("different configurations"), "{stderr}");
}

#[test]
fn a_change_of_rank_count_is_refused_for_a_loss_that_depends_on_the_split() {
    let tmp = tempfile::tempdir().unwrap();
    let config = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
    };
    // LGL-INR normalises its weights over each shard's batch: 2 ranks of 32 are not 1 of 64.
    for (loss, refused) in [("lgl-inr", true), ("sml", false)] {
        let dir = tmp.path().join(loss);
        let d = dir.to_str().unwrap();
        let first = mpirun(
            2,
            &[
                &["train", "--loss", loss],
                &RUN[3..],
                &["--distributed", "--stop-after", "1", "--out", d],
            ]
            .concat(),
        );
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert_eq!(config(&dir)["ranks"], 2);
        let alone = Command::new(BIN)
            .args(["train", "--resume", d, "--quiet"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&alone.stderr);
        if refused {
            assert!(!alone.status.success(), "{loss}: resumed on 1 process");
            assert!(
                stderr.contains("ranks") && stderr.contains("--allow-rank-change"),
                "{stderr}"
            );
            let forced = Command::new(BIN)
                .args(["train", "--resume", d, "--allow-rank-change", "--quiet"])
                .output()
                .unwrap();
            assert!(
                forced.status.success(),
                "{}",
                String::from_utf8_lossy(&forced.stderr)
            );
        } else {
            assert!(alone.status.success(), "{loss}: {stderr}");
        }
        let recorded = config(&dir);
        assert_eq!(recorded["ranks"], 1, "{loss}");
        assert_eq!(
            recorded["history"][0]["changed"]["ranks"],
            serde_json::json!([2, 1]),
            "{loss}"
        );
    }
}
