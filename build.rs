//! Compiles the source tree's git revision into the crate (`TENSORGRAD_BUILD_REVISION`), so
//! a run records the code that ran, not whatever the checkout holds when the run ends.
//! `-dirty` marks a build with uncommitted changes to tracked files; outside git, nothing is
//! set and runs record "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        // No optional index refresh: `git status` would otherwise rewrite .git/index,
        // which this script watches, and the next build would recompile for nothing.
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    // Rebuild the revision when the checkout moves (commit, checkout) or a source changes.
    for path in [
        ".git/HEAD",
        ".git/index",
        ".git/refs",
        ".git/packed-refs",
        "src",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    if let Some(head) = git(&["rev-parse", "HEAD"]) {
        let dirty =
            git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        let suffix = if dirty { "-dirty" } else { "" };
        println!("cargo:rustc-env=TENSORGRAD_BUILD_REVISION={head}{suffix}");
    }
}
