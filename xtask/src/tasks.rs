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
}

const NOT_ROOT_BANNER: &str = "\
################################################################################
#  WARNING: not running as root. The privileged integration tests (eBPF load,  #
#  network namespaces, real incidents) will SKIP and prove nothing.            #
#  Run `cargo xtask test` as root for a real result.                           #
################################################################################";

pub fn test(quick: bool, privs: &Privileges) -> Result<()> {
    let root = workspace_root();
    let mut steps = Vec::new();
    let result = test_steps(quick, privs, &root, &mut steps);
    eprintln!("\ntest: step timings");
    for s in &steps {
        let mark = if s.ok { "ok    " } else { "FAILED" };
        eprintln!("  {mark} {:>7.1} s  {}", s.took.as_secs_f64(), s.name);
    }
    let total: Duration = steps.iter().map(|s| s.took).sum();
    eprintln!("  total  {:>7.1} s", total.as_secs_f64());
    if !is_root() {
        eprintln!("{NOT_ROOT_BANNER}");
    }
    result
}

fn test_steps(quick: bool, privs: &Privileges, root: &Path, steps: &mut Vec<Step>) -> Result<()> {
    if !quick {
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
        cargo_step(&["test", "--workspace"]),
    ));
    if !quick && is_root() {
        // The host's kernel and Debian's 6.1 under QEMU; `cargo xtask vm-test` adds 6.12.
        plan.push((
            "kernel portability (host + Debian 6.1 in QEMU)",
            cargo_step(&["xtask", "vm-test", "--quick"]),
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
        timed(steps, &name, || {
            cmd.run().map_err(|e| {
                e.context(format!(
                    "test step `{what}` failed; fix it and re-run `cargo xtask test` \
                     (`cargo xtask test --quick` skips setup and the format check)"
                ))
            })
        })?;
    }
    Ok(())
}

fn timed(steps: &mut Vec<Step>, name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("\n==> {name}");
    let start = Instant::now();
    let result = f();
    steps.push(Step {
        name: name.to_owned(),
        took: start.elapsed(),
        ok: result.is_ok(),
    });
    result
}
