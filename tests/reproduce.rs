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

    // Quick mode says, in the terminal and the report, that it is not evidence.
    let warning = "smoke test of the pipeline, not evidence";
    assert!(stdout.contains(warning), "{stdout}");
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    assert!(report.contains(warning));
    for section in [
        "## Provenance",
        "## Verdicts",
        "## Learning rates",
        "## Claim (1)",
        "## Claim (2)",
        "## Claim (3)",
        "## LGL-INR's focusing",
        "## Divergence",
        "## E0 ",
        "## E0b ",
        "## Headline",
    ] {
        assert!(report.contains(section), "{section} missing");
    }
    for exp in ["e0", "e0b", "e1", "e2", "e3", "e5"] {
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

    // The verdicts ran on these outputs: each claim has a verdict from its rule, and the
    // evidence they read is written beside them.
    let verdicts = json(&out.join("verdicts.json"));
    for v in verdicts.as_array().unwrap() {
        let verdict = v["verdict"].as_str().unwrap();
        assert!(
            ["confirmed", "not confirmed", "mixed", "not run"].contains(&verdict),
            "{v}"
        );
        assert!(
            v["reason"].as_str().unwrap().contains("Rule:") || verdict == "not run",
            "{v}"
        );
    }
    let evidence = json(&out.join("evidence.json"));
    assert_eq!(
        evidence["learning_rates"]["families"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    assert!(evidence["best_beta"].is_number(), "{evidence}");
    assert_eq!(
        evidence["provenance"]["revisions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

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

    // Every run of E1–E5 was analysed (the sweep's are not: they only choose rates), and
    // the run folders are the runs the summary line counts; a second invocation trains
    // and refits nothing.
    let folders = |e: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(out.join(e).join("runs"))
            .unwrap()
            .map(|d| d.unwrap().path())
            .collect()
    };
    let sweep = folders("lr-sweep");
    assert_eq!(sweep.len(), 8 * 2, "8 loss families × 2 quick rates");
    let runs: Vec<_> = ["e1", "e2", "e3", "e5"]
        .iter()
        .flat_map(|e| folders(e))
        .collect();
    assert_eq!(folders("e1").len(), 7);
    assert_eq!(folders("e2").len(), 15);
    assert_eq!(folders("e5").len(), 5);
    let total = sweep.len() + runs.len();
    assert!(
        stdout.contains(&format!("{total} runs; report")),
        "{stdout}"
    );
    for r in &runs {
        assert!(r.join("result.json").is_file(), "{}", r.display());
        let trained = json(&r.join("trained.json"));
        let p = &trained["provenance"];
        assert!(p["command"][1] == "reproduce" && p["jobs"] == 2, "{p}");
        assert!(p["wall_seconds"].as_f64().unwrap() > 0.0, "{p}");
        assert!(trained["git_revision"].is_string(), "{trained}");
        // LGL-INR records its focus per epoch; the others have none.
        let focus = &trained["summary"]["epochs"][0]["focus"];
        let inr = r.to_string_lossy().contains("lgl-inr");
        assert_eq!(focus.is_number(), inr, "{}", r.display());
    }
    for r in &sweep {
        assert!(!r.join("result.json").exists(), "{}", r.display());
    }
    let second = reproduce(&out, &["all"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains("16 runs already trained: skipped"),
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
        stderr.contains("resuming e1/balanced-lgl-s0 (1 runs left"),
        "{stderr}"
    );
    assert!(cut.join("result.json").is_file());

    // A run recorded by another binary revision is not mixed into the report silently,
    // and a run trained with another configuration than the plan is refused.
    let path = out.join("e1/runs/balanced-sml-s0/trained.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let mut other: serde_json::Value = serde_json::from_str(&original).unwrap();
    other["git_revision"] = "0000000".into();
    std::fs::write(&path, other.to_string()).unwrap();
    let mixed = reproduce(&out, &["e1"]);
    let stderr = String::from_utf8_lossy(&mixed.stderr);
    assert!(!mixed.status.success(), "{stderr}");
    assert!(stderr.contains("--allow-mixed-revisions"), "{stderr}");
    assert!(stderr.contains("0000000"), "{stderr}");
    let allowed = reproduce(&out, &["e1", "--allow-mixed-revisions"]);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let mut changed: serde_json::Value = serde_json::from_str(&original).unwrap();
    changed["run"]["config"]["lr"] = 0.5.into();
    std::fs::write(&path, changed.to_string()).unwrap();
    let stale = reproduce(&out, &["e1"]);
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(!stale.status.success(), "{stderr}");
    assert!(stderr.contains("another configuration"), "{stderr}");
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
