//! `tensorgrad reproduce all --quick`: the whole protocol end to end on small data, its
//! outputs, the conditions it must find, and that a second invocation trains nothing.

use std::path::Path;
use std::process::Command;

fn reproduce(out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tensorgrad"))
        .args(["reproduce"])
        .args(extra)
        .args([
            "--quick",
            "--seeds",
            "0",
            "--jobs",
            "2",
            "--threads",
            "1",
            "--out",
        ])
        .arg(out)
        .output()
        .expect("the binary runs")
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn reproduce_all_quick_writes_the_report_and_continues_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let first = reproduce(&out, &["all"]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&first.stdout);
    for claim in ["(1)", "(2)", "(3)"] {
        assert!(stdout.contains(claim), "{stdout}");
    }
    assert!(stderr.contains("E4 left out"), "{stderr}");
    assert!(stderr.contains("runs left"), "{stderr}");

    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    assert!(report.contains("quick mode"));
    for section in ["## Verdicts", "## E0 ", "## E0b ", "## Headline"] {
        assert!(report.contains(section), "{section} missing");
    }
    for exp in ["e0", "e0b", "e1", "e2", "e3"] {
        assert!(out.join(exp).join("README.md").is_file(), "{exp}");
    }
    for png in [
        "e1/balanced-accuracy.png",
        "e1/balanced-lgl-p-bar.png",
        "e3/rho100-per-class-accuracy.png",
    ] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png}");
    }

    // E0: every fit reached the tolerance and satisfies its condition.
    let e0 = json(&out.join("e0/result.json"));
    let fits = e0["fits"].as_array().unwrap();
    assert_eq!(fits.len(), 6);
    for f in fits {
        assert!(f["converged"].as_bool().unwrap(), "{f}");
        assert!(f["audit"]["max_residual"].as_f64().unwrap() <= 1e-4, "{f}");
    }
    // E0b/E2: after the refit the binary relation holds, and the weighted ratio is 1.
    let (relations, _): (serde_json::Value, serde_json::Value) =
        serde_json::from_value(json(&out.join("e2/summary.json"))).unwrap();
    let relations = relations.as_array().unwrap();
    assert_eq!(relations.len(), 9);
    for b in relations {
        assert!(b["refit_residual"].as_f64().unwrap() <= 1e-6, "{b}");
        if b["label"] != "LGL" {
            assert!(
                (b["observed_ratio"].as_f64().unwrap() - 1.0).abs() <= 1e-5,
                "{b}"
            );
        }
    }

    // Every run was analysed; a second invocation trains and refits nothing.
    let runs: Vec<_> = ["e1", "e2", "e3"]
        .iter()
        .flat_map(|e| std::fs::read_dir(out.join(e).join("runs")).unwrap())
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 5 + 9 + 16);
    for r in &runs {
        assert!(r.join("result.json").is_file(), "{}", r.display());
    }
    let second = reproduce(&out, &["all"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains("30 runs already trained: skipped"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("training ") && !stderr.contains("refit of"),
        "{stderr}"
    );

    // A run whose training was cut short (checkpoint, no record) is resumed, not restarted.
    let cut = out.join("e1/runs/balanced-lgl-s0");
    std::fs::remove_file(cut.join("trained.json")).unwrap();
    std::fs::remove_file(cut.join("result.json")).unwrap();
    let third = reproduce(&out, &["e1"]);
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(third.status.success(), "{stderr}");
    assert!(
        stderr.contains("resuming e1/balanced-lgl-s0 (1 runs left)"),
        "{stderr}"
    );
    assert!(cut.join("result.json").is_file());
}

#[test]
fn e4_without_cifar_is_an_error_that_says_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let r = reproduce(&dir.path().join("r"), &["e4"]);
    assert!(!r.status.success());
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(stderr.contains("--data-dir"), "{stderr}");
    let bad = reproduce(&dir.path().join("r"), &["e9"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("e0, e0b"));
}
