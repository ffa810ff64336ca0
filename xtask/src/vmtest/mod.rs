//! `cargo xtask vm-test [--quick] [--kernel K]...`: runs tcpwatch's privileged scenarios on
//! real kernels: the host's running kernel (in a network namespace of the runner's own) and
//! Debian's cloud kernels booted under QEMU (TCG) with an initramfs whose `/init` is the
//! scenario runner (`tcpwatch-vmtest`). Kernel packages and logs are kept under
//! `target/vm-test/`. See docs/kernels.md.
//!
//! Kernels: `host`, `5.10` (bullseye), `6.1` (bookworm), `6.12` (bookworm-backports), or a
//! package name. Default: all four; `--quick`: `host` and `5.10` (the oldest).

mod expect;
mod initramfs;
mod kernels;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{Cmd, Privilege, Privileges, cargo};
use crate::setup;
use crate::tasks::workspace_root;

/// Packages this command needs (Debian 12).
const PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "cpio"];
const FULL: &[&str] = &["host", "5.10", "6.1", "6.12"];
const QUICK: &[&str] = &["host", "5.10"];
/// Wall-clock limit of one kernel's run (boot + scenarios + power-off). A 6.1 kernel under
/// TCG on a busy 2-core machine takes about a minute.
const VM_TIMEOUT: Duration = Duration::from_mins(5);
const HOST_TIMEOUT: Duration = Duration::from_mins(3);

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub quick: bool,
    pub kernels: Vec<String>,
}

/// One scenario's result on one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioResult {
    pub name: String,
    pub verdict: String,
    pub detail: String,
}

/// What a runner printed, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// `uname -r` as the runner saw it.
    pub release: Option<String>,
    pub scenarios: Vec<ScenarioResult>,
    /// The runner printed `VMTEST-DONE` (it was not cut short).
    pub done: bool,
    /// Runner-level errors (`VMTEST-ERROR`).
    pub errors: Vec<String>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.done
            && self.errors.is_empty()
            && !self.scenarios.is_empty()
            && self.scenarios.iter().all(|s| s.verdict != "FAIL")
    }
}

/// Parses runner output (serial console or stdout): `VMTEST <name> <PASS|FAIL|SKIP> <detail>`,
/// `VMTEST-INFO kernel <release>`, `VMTEST-DONE ...`, `VMTEST-ERROR ...`. Other lines (kernel
/// messages) are ignored; a serial console may add `\r` or glue kernel text before a line.
pub fn parse_output(text: &str) -> RunReport {
    let mut r = RunReport::default();
    for line in text.lines() {
        let line = line.trim_matches(|c: char| c == '\r' || c.is_whitespace());
        let Some(at) = line.find("VMTEST") else {
            continue;
        };
        let line = &line[at..];
        if let Some(rest) = line.strip_prefix("VMTEST-INFO kernel ") {
            r.release = Some(rest.trim().to_owned());
        } else if line.starts_with("VMTEST-DONE") {
            r.done = true;
        } else if let Some(rest) = line.strip_prefix("VMTEST-ERROR ") {
            r.errors.push(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("VMTEST ") {
            let mut parts = rest.splitn(3, ' ');
            let (Some(name), Some(verdict)) = (parts.next(), parts.next()) else {
                continue;
            };
            if !matches!(verdict, "PASS" | "FAIL" | "SKIP") {
                continue;
            }
            r.scenarios.push(ScenarioResult {
                name: name.to_owned(),
                verdict: verdict.to_owned(),
                detail: parts.next().unwrap_or_default().trim().to_owned(),
            });
        }
    }
    r
}

struct KernelRun {
    label: String,
    /// What this kernel must run (see `expect.rs`).
    expect: expect::Expectation,
    report: RunReport,
    took: Duration,
    /// Why there is no (complete) report: fetch/boot error, timeout.
    problem: Option<String>,
    log: Option<PathBuf>,
}

pub fn run(opts: &Options, privs: &Privileges) -> Result<()> {
    let started = Instant::now();
    if privs.get() == Privilege::None {
        bail!(
            "vm-test needs root (apt-get, and the host scenarios load eBPF programs in a network \
             namespace): run `cargo xtask vm-test` as root or with passwordless sudo"
        );
    }
    let root = workspace_root();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let vm_dir = target.join("vm-test");
    std::fs::create_dir_all(vm_dir.join("logs"))?;
    let kernels: Vec<String> = if opts.kernels.is_empty() {
        (if opts.quick { QUICK } else { FULL })
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    } else {
        opts.kernels.clone()
    };
    for k in &kernels {
        if k != "host" && kernels::suite_for(k).is_none() {
            bail!(
                "unknown --kernel {k}: use host, 5.10, 6.1, 6.12 or a \
                 linux-image-5.10*/6.1*/6.12* package"
            );
        }
    }
    ensure_packages(privs)?;
    setup::run(setup::Options::default(), privs)?;
    Cmd::new(cargo())
        .args([
            "build",
            "--release",
            "-p",
            "tcpwatch",
            "-p",
            "tcpwatch-vmtest",
        ])
        .dir(&root)
        .run()?;
    let bins = initramfs::Binaries {
        tcpwatch: target.join("release/tcpwatch"),
        runner: target.join("release/tcpwatch-vmtest"),
    };
    let mut runs = Vec::new();
    for k in &kernels {
        let t0 = Instant::now();
        let log = vm_dir.join("logs").join(format!("{}.log", sanitize(k)));
        eprintln!("\n==> vm-test: kernel {k}");
        let (label, outcome) = if k == "host" {
            (
                format!("host {}", host_release()),
                run_host(&bins, &log, privs),
            )
        } else {
            match kernels::fetch(k, &vm_dir, privs) {
                Ok(kernel) => {
                    let work = vm_dir.join("work").join(sanitize(k));
                    std::fs::create_dir_all(&work)?;
                    let label = kernel.package.trim_start_matches("linux-image-").to_owned();
                    (label, boot(&kernel, &bins, &work, &log))
                }
                Err(e) => (k.clone(), Err(e)),
            }
        };
        let (report, problem) = match outcome {
            Ok((report, problem)) => (report, problem),
            Err(e) => (RunReport::default(), Some(format!("{e:#}"))),
        };
        runs.push(KernelRun {
            label,
            expect: expect::for_kernel(k),
            report,
            took: t0.elapsed(),
            problem,
            log: Some(log),
        });
    }
    let ok = print_table(&runs);
    eprintln!("vm-test: total {:.0} s", started.elapsed().as_secs_f64());
    if !ok {
        bail!(
            "vm-test failed (serial/stdout logs in {})",
            vm_dir.join("logs").display()
        );
    }
    Ok(())
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn host_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_owned())
}

/// Installs what is missing of [`PACKAGES`] (no-op, and no `apt-get update`, when present).
fn ensure_packages(privs: &Privileges) -> Result<()> {
    let out = Cmd::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${db:Status-Abbrev}\n"])
        .args(PACKAGES)
        .output()
        .context("vm-test supports Debian 12 (bookworm) hosts only: dpkg-query is needed")?;
    let installed = setup::installed_packages(&out.stdout);
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "vm-test: packages {}: already installed",
            PACKAGES.join(" ")
        );
        return Ok(());
    }
    eprintln!("vm-test: installing {}", missing.join(" "));
    privs
        .as_root(&Cmd::new("apt-get").args(["update", "-q"]).no_stdin())?
        .run()?;
    let install = Cmd::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .no_stdin();
    privs.as_root(&install)?.run()
}

/// Runs the scenarios on the host's kernel, in a network namespace of the runner's own.
fn run_host(
    bins: &initramfs::Binaries,
    log: &Path,
    privs: &Privileges,
) -> Result<(RunReport, Option<String>)> {
    let mut c = if privs.get() == Privilege::Root {
        Command::new(&bins.runner)
    } else {
        let mut c = Command::new("sudo");
        c.arg("-n").arg(&bins.runner);
        c
    };
    c.arg("--host").arg("--tcpwatch").arg(&bins.tcpwatch);
    run_with_timeout(c, HOST_TIMEOUT, log, "host")
}

/// Boots `kernel` under QEMU (TCG) with the scenario initramfs. `-cpu max,-cx16`: with QEMU
/// 7.2's default `qemu64` model Debian's 6.12 panics in `kmem_cache_alloc` during boot, and
/// with `max` (which has `cx16`) QEMU 7.2's TCG corrupts the 6.12 guest's SLUB freelists, whose
/// fast path is a per-CPU `cmpxchg16b`: a double fault right after that instruction in
/// `kmem_cache_alloc`, list corruption in `kmem_cache_free` under `rcu_do_batch` at 2.6 s, in
/// kernel threads before `/init`, with garbage flags. Measured on 2026-12-01: `max` crashed 6
/// of 12 boots (4 in kernel threads, with no tcpwatch code running), `max,-la57` 3 of 6,
/// `max,-cx16` 0 of 14 (docs/kernels.md). Without `cx16` the guest's SLUB takes its locked
/// path.
///
/// A boot that still panics before the runner printed anything is retried, at most
/// [`BOOT_ATTEMPTS`] times, and the retries are reported. A panic after the runner started
/// is a failure like any other.
fn boot(
    kernel: &kernels::Kernel,
    bins: &initramfs::Binaries,
    work: &Path,
    log: &Path,
) -> Result<(RunReport, Option<String>)> {
    let initrd = initramfs::build(kernel, bins, work)?;
    let mut attempt = 1;
    loop {
        let (report, problem) = boot_once(kernel, &initrd, log)?;
        let early_panic = report.release.is_none()
            && report.scenarios.is_empty()
            && std::fs::read_to_string(log).is_ok_and(|l| l.contains("Kernel panic"));
        if !early_panic || attempt >= BOOT_ATTEMPTS {
            if attempt > 1 {
                // Reported, not hidden; a retried boot that then passed does not fail the run.
                eprintln!(
                    "vm-test: {}: {} boot(s) panicked in the emulator before /init",
                    kernel.package,
                    attempt - 1
                );
            }
            return Ok((report, problem));
        }
        eprintln!(
            "vm-test: {}: the guest panicked before /init (QEMU TCG fault); boot {} of {BOOT_ATTEMPTS}",
            kernel.package,
            attempt + 1
        );
        attempt += 1;
    }
}

/// Boots of one kernel tried when the emulator crashes the guest before `/init`.
const BOOT_ATTEMPTS: u32 = 5;

fn boot_once(
    kernel: &kernels::Kernel,
    initrd: &Path,
    log: &Path,
) -> Result<(RunReport, Option<String>)> {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        "tcg",
        "-cpu",
        "max,-cx16",
        "-m",
        "1024",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
    ])
    .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
    .arg("-kernel")
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    let label = kernel.package.trim_start_matches("linux-image-").to_owned();
    run_with_timeout(c, VM_TIMEOUT, log, &label)
}

/// Runs `c`, echoing runner lines, saving all output to `log`; kills it at `limit`. Returns
/// the parsed report and a problem when it was cut short.
fn run_with_timeout(
    mut c: Command,
    limit: Duration,
    log: &Path,
    label: &str,
) -> Result<(RunReport, Option<String>)> {
    eprintln!("+ {c:?}");
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", Path::new(c.get_program()).display()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || pump(out, &tx)));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || pump(err, &tx)));
    }
    drop(tx);
    let t0 = Instant::now();
    let mut text = String::new();
    let mut timed_out = false;
    loop {
        let left = limit.saturating_sub(t0.elapsed());
        if left.is_zero() {
            timed_out = true;
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                if line.contains("VMTEST") && !line.contains("VMTEST-LOG") {
                    let shown = line.trim_matches(['\r', '\n']);
                    eprintln!("  [{label} {:>5.1} s] {shown}", t0.elapsed().as_secs_f64());
                }
                text.push_str(&line);
                text.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait()?;
    for r in readers {
        let _ = r.join();
    }
    std::fs::write(log, &text).with_context(|| format!("write {}", log.display()))?;
    let report = parse_output(&text);
    let problem = if timed_out {
        Some(format!(
            "timed out after {} s (log: {})",
            limit.as_secs(),
            log.display()
        ))
    } else if !report.done {
        Some(format!(
            "ended ({status}) before VMTEST-DONE (log: {})",
            log.display()
        ))
    } else {
        None
    };
    Ok((report, problem))
}

fn pump(r: impl std::io::Read, tx: &mpsc::Sender<String>) {
    let mut r = BufReader::new(r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

/// Prints the scenario × kernel table and the failures; true when everything passed.
fn print_table(runs: &[KernelRun]) -> bool {
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        for s in &r.report.scenarios {
            if !names.contains(&s.name) {
                names.push(s.name.clone());
            }
        }
    }
    let width = names.iter().map(String::len).max().unwrap_or(8).max(8);
    let col = runs.iter().map(|r| r.label.len()).max().unwrap_or(6).max(6);
    eprintln!("\nvm-test results");
    let mut header = format!("  {:width$}", "scenario");
    for r in runs {
        let _ = write!(header, "  {:col$}", r.label);
    }
    eprintln!("{header}");
    let by_kernel: Vec<BTreeMap<&str, &ScenarioResult>> = runs
        .iter()
        .map(|r| {
            r.report
                .scenarios
                .iter()
                .map(|s| (s.name.as_str(), s))
                .collect()
        })
        .collect();
    for n in &names {
        let mut line = format!("  {n:width$}");
        for m in &by_kernel {
            let v = m.get(n.as_str()).map_or("-", |s| s.verdict.as_str());
            let _ = write!(line, "  {v:col$}");
        }
        eprintln!("{line}");
    }
    let mut line = format!("  {:width$}", "(kernel seen / time)");
    for r in runs {
        let rel = r.report.release.as_deref().unwrap_or("?");
        let cell = format!("{rel} {:.0}s", r.took.as_secs_f64());
        let _ = write!(line, "  {cell:col$}");
    }
    eprintln!("{line}");
    let mut ok = true;
    for r in runs {
        let unmet = expect::problems(&r.expect, &r.report);
        let passed = r.problem.is_none() && r.report.passed() && unmet.is_empty();
        ok &= passed;
        let log = r
            .log
            .as_ref()
            .map(|l| format!(" (log: {})", l.display()))
            .unwrap_or_default();
        if let Some(p) = &r.problem {
            eprintln!("  {}: PROBLEM: {p}", r.label);
        }
        for e in &r.report.errors {
            eprintln!("  {}: ERROR: {e}{log}", r.label);
        }
        for s in r.report.scenarios.iter().filter(|s| s.verdict != "PASS") {
            eprintln!("  {} {} {}: {}", r.label, s.name, s.verdict, s.detail);
        }
        for u in &unmet {
            eprintln!("  {}: NOT AS DECLARED: {u}", r.label);
        }
        let ran = r
            .expect
            .required
            .iter()
            .filter(|n| {
                r.report
                    .scenarios
                    .iter()
                    .any(|s| s.name == **n && s.verdict == "PASS")
            })
            .count();
        eprintln!(
            "  {}: {ran} of {} required scenario(s) passed, {} optional",
            r.label,
            r.expect.required.len(),
            r.expect.optional.len()
        );
        eprintln!(
            "  {}: {}",
            r.label,
            if passed { "PASSED" } else { "FAILED" }
        );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runner_output_from_a_serial_console() {
        let text = "[    0.000000] Linux version 6.1.0\r\n\
                    VMTEST-INFO kernel 6.1.0-56-cloud-amd64\r\n\
                    [    1.2] random: crng init done VMTEST state_tracking PASS LISTEN ok (0.5 s)\r\n\
                    VMTEST blackholed_peer SKIP no nft binary here (0.0 s)\n\
                    VMTEST send_q FAIL client send_q 5, SIOCOUTQ 6\n\
                    VMTEST bogus MAYBE x\n\
                    VMTEST-DONE pass=1 fail=1 skip=1\n";
        let r = parse_output(text);
        assert_eq!(r.release.as_deref(), Some("6.1.0-56-cloud-amd64"));
        assert!(r.done);
        assert_eq!(r.scenarios.len(), 3);
        assert_eq!(r.scenarios[0].name, "state_tracking");
        assert_eq!(r.scenarios[0].detail, "LISTEN ok (0.5 s)");
        assert_eq!(r.scenarios[1].verdict, "SKIP");
        assert!(!r.passed(), "one FAIL");
        let ok = parse_output("VMTEST a PASS x\nVMTEST b SKIP y\nVMTEST-DONE\n");
        assert!(ok.passed());
        assert!(!parse_output("VMTEST a PASS x\n").passed(), "cut short");
        assert!(!parse_output("VMTEST-ERROR boom\nVMTEST-DONE\n").passed());
    }

    #[test]
    fn labels_become_file_names() {
        assert_eq!(
            sanitize("linux-image-6.12.95+deb12-cloud-amd64"),
            "linux-image-6.12.95_deb12-cloud-amd64"
        );
        assert_eq!(sanitize("host"), "host");
    }
}
