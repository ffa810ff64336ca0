//! `build`, `run` and `test`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cmd::{Cmd, Privilege, Privileges, cargo, is_root};
use crate::setup;

/// The workspace root (xtask lives in `<root>/xtask`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

pub fn build(release: bool, privs: &Privileges) -> Result<()> {
    setup::run(setup::Options::default(), privs)?;
    let mut cmd = Cmd::new(cargo()).args(["build", "-p", "tcpwatch"]);
    if release {
        cmd = cmd.arg("--release");
    }
    cmd.dir(&workspace_root()).run()
}

/// Builds the release daemon and replaces this process with it (as root).
pub fn run(daemon_args: Vec<String>, privs: &Privileges) -> Result<()> {
    let root = workspace_root();
    let binary = target_dir(&root).join("release").join("tcpwatch");
    // Checked first: no point in building for minutes if the daemon cannot be started.
    if privs.get() == Privilege::None {
        bail!(
            "loading eBPF programs needs root (or the capabilities CAP_BPF, CAP_PERFMON and \
             CAP_SYS_ADMIN, plus CAP_SYS_PTRACE to find socket owners), and this user is not \
             root and has no passwordless sudo: run `cargo xtask run` as root, or \
             `cargo xtask build --release` and then `sudo {} daemon`",
            binary.display()
        );
    }
    setup::run(setup::Options::default(), privs)?;
    Cmd::new(cargo())
        .args(["build", "--release", "-p", "tcpwatch"])
        .dir(&root)
        .run()?;
    let daemon = Cmd::new(&binary).arg("daemon").args(daemon_args).dir(&root);
    if privs.get() == Privilege::Sudo {
        eprintln!("run: not root; starting the daemon through `sudo -n`");
    }
    Err(privs.as_root(&daemon)?.exec())
}

struct Step {
    name: String,
    took: Duration,
    ok: bool,
    /// Checks this step counted (tests of a test binary; 1 for other steps).
    passed: u64,
    failed: u64,
}

const NOT_ROOT_BANNER: &str = "\
################################################################################
#  WARNING: not running as root. The privileged integration tests (eBPF load,  #
#  network namespaces, real incidents) will SKIP and prove nothing.            #
#  Run `cargo xtask test` as root for a real result.                           #
################################################################################";

/// Runs every step (a failed step does not stop the later ones: the verdict counts them all),
/// prints the step timings, then one closing line `N passed, N failed`.
pub fn test(quick: bool, privs: &Privileges) -> std::process::ExitCode {
    let root = workspace_root();
    let mut steps = Vec::new();
    let result = test_steps(quick, privs, &root, &mut steps);
    eprintln!("\ntest: step timings");
    for s in &steps {
        let mark = if s.ok { "ok    " } else { "FAILED" };
        eprintln!(
            "  {mark} {:>7.1} s  {} ({} passed, {} failed)",
            s.took.as_secs_f64(),
            s.name,
            s.passed,
            s.failed
        );
    }
    let total: Duration = steps.iter().map(|s| s.took).sum();
    eprintln!("  total  {:>7.1} s", total.as_secs_f64());
    if !is_root() {
        eprintln!("{NOT_ROOT_BANNER}");
    }
    let passed: u64 = steps.iter().map(|s| s.passed).sum();
    let failed: u64 = steps.iter().map(|s| s.failed).sum();
    let failed_steps: Vec<&str> = steps
        .iter()
        .filter(|s| !s.ok)
        .map(|s| s.name.as_str())
        .collect();
    if let Err(e) = &result {
        eprintln!("\nerror: {e:#}");
    }
    if !failed_steps.is_empty() {
        eprintln!(
            "\nerror: {} step(s) failed: {}\nfix them and re-run `cargo xtask test` \
             (`cargo xtask test --quick` skips setup, the format check, the VM and benchmark)",
            failed_steps.len(),
            failed_steps.join("; ")
        );
    }
    // The verdict is the last line of the log (stdout, after every message above).
    let _ = std::io::Write::flush(&mut std::io::stderr());
    println!("verdict: {passed} passed, {failed} failed");
    if result.is_err() || !failed_steps.is_empty() {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

/// Sums cargo test's `test result: ok. N passed; M failed; ...` lines.
fn count_cargo_tests(out: &str) -> (u64, u64) {
    let mut passed = 0;
    let mut failed = 0;
    for line in out.lines().filter(|l| l.starts_with("test result: ")) {
        for part in line.split([';', '.']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => passed += n,
                "failed" => failed += n,
                _ => {}
            }
        }
    }
    (passed, failed)
}

fn test_steps(quick: bool, privs: &Privileges, root: &Path, steps: &mut Vec<Step>) -> Result<()> {
    if !quick {
        // Without the toolchain nothing else can run: this one stops the run.
        timed(steps, "setup --test-deps", || {
            setup::run(setup::Options { test_deps: true }, privs)
        })?;
    }
    let cargo_step = |args: &[&str]| Cmd::new(cargo()).args(args).dir(root);
    let mut plan: Vec<(&str, Cmd)> = Vec::new();
    if !quick {
        plan.push((
            "format check",
            cargo_step(&["fmt", "--all", "--", "--check"]),
        ));
    }
    plan.push((
        "clippy",
        cargo_step(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    ));
    plan.push((
        "cargo deny (licenses, bans, sources)",
        cargo_step(&["deny", "check", "licenses", "bans", "sources"]),
    ));
    plan.push((
        "unit and integration tests",
        cargo_step(&["test", "--workspace", "--no-fail-fast"]),
    ));
    if !quick && is_root() {
        // The host's kernel and Debian's 5.10 (the oldest), 6.1 and 6.12 under QEMU (each about
        // a minute, plus a download of 21-34 MB once: docs/kernels.md).
        plan.push((
            "kernel portability (host + Debian 5.10, 6.1 and 6.12 in QEMU)",
            cargo_step(&[
                "xtask", "vm-test", "--kernel", "host", "--kernel", "5.10", "--kernel", "6.1",
                "--kernel", "6.12",
            ]),
        ));
        // Checks that the benchmark still runs end to end; its goals are judged by the full
        // `cargo xtask bench` (docs/performance.md), not here.
        plan.push((
            "benchmark smoke run",
            cargo_step(&["xtask", "bench", "--smoke"]),
        ));
    }
    for (what, cmd) in plan {
        if what.starts_with("unit") && !is_root() {
            eprintln!("{NOT_ROOT_BANNER}");
        }
        let name = format!("{what}: {}", cmd.display());
        if what.starts_with("unit") {
            eprintln!("\n==> {name}");
            let start = Instant::now();
            let (ok, passed, failed) = match cmd.run_tee() {
                Ok((status, out)) => {
                    let (p, f) = count_cargo_tests(&out);
                    // A binary that crashed or did not build has no result line: count it.
                    let f = if status.success() { f } else { f.max(1) };
                    (status.success(), p, f)
                }
                Err(e) => {
                    eprintln!("test: {e:#}");
                    (false, 0, 1)
                }
            };
            steps.push(Step {
                name,
                took: start.elapsed(),
                ok,
                passed,
                failed,
            });
            continue;
        }
        // A failed step is recorded and the run goes on.
        let _ = timed(steps, &name, || {
            cmd.run().map_err(|e| {
                e.context(format!(
                    "test step `{what}` failed; fix it and re-run `cargo xtask test` \
                     (`cargo xtask test --quick` skips setup and the format check)"
                ))
            })
        })
        .map_err(|e| eprintln!("test: {e:#}"));
    }
    Ok(())
}

fn timed(steps: &mut Vec<Step>, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("\n==> {name}");
    let start = Instant::now();
    let result = f();
    let ok = result.is_ok();
    steps.push(Step {
        name: name.to_owned(),
        took: start.elapsed(),
        ok,
        passed: u64::from(ok),
        failed: u64::from(!ok),
    });
    result
}

#[cfg(test)]
mod tests {
    use super::count_cargo_tests;

    #[test]
    fn cargo_result_lines_are_summed() {
        let out = "running 3 tests\n\
                   test a ... ok\n\
                   test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
                   test result: FAILED. 5 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.2s\n\
                   not a result: 9 passed\n";
        assert_eq!(count_cargo_tests(out), (8, 2));
        assert_eq!(count_cargo_tests(""), (0, 0));
    }
}
