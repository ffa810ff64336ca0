//! `cargo xtask setup`: installs what building and testing tcpwatch needs on a Debian 12
//! machine, idempotently (see /work/shared/toolchain/RECIPE.md for why each piece is needed):
//!
//! - Debian's `rustc-web`/`cargo-web` and the EXACT matching `rust-web-src`, for
//!   `-Z build-std=core` on `bpfel-unknown-none` (rustup's `rust-src` is not reachable here, and
//!   that library source only compiles with that compiler);
//! - `llvm-<N>-dev` for the LLVM major `N` of that rustc, which `bpf-linker` links against;
//! - a rustup toolchain `debian-rustc-web` pointing at `/usr`, for aya-build;
//! - `bpf-linker` 0.13.0 built for LLVM `N`;
//! - tracefs and bpffs mounted (needed at run time, not to build);
//! - with `--test-deps`, the packages the integration tests use.
//!
//! When everything is present it only reads: no `apt-get update`, well under 2 s.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::cmd::{Cmd, Privilege, Privileges, find_in_path};

const BUILD_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "rust-web-src"];
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "tmux",
    "prometheus",
    "prometheus-alertmanager",
    // a real reverse proxy with upstream keep-alive (tests/nginx_stale.rs)
    "nginx",
    // container privilege proof (tests/container.rs) and manifest validation
    "podman",
    "runc",
    "python3-venv",
    // `ss` ground truth and `setpriv` in the privileged tests
    "util-linux",
    // the kernel's own program statistics (`bpftool prog show`: tests/flood.rs,
    // tests/program_stats.rs)
    "bpftool",
    // the API over HTTP(S) from outside (tests/security.rs) and the test PKI (tcpwatch-testkit)
    "curl",
    "openssl",
];
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const CORE_SRC: &str = "/usr/lib/rustlib/src/rust/library/core/src/lib.rs";
const TOOLCHAIN: &str = "debian-rustc-web";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Checks licenses, bans and sources in `cargo xtask test` (`deny.toml`).
pub const CARGO_DENY_VERSION: &str = "0.20.2";
/// (file system type, mount point).
const MOUNTS: &[(&str, &str)] = &[("tracefs", "/sys/kernel/tracing"), ("bpf", "/sys/fs/bpf")];

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Also install the integration tests' packages.
    pub test_deps: bool,
}

/// What one step found or did.
enum Outcome {
    Present(String),
    Done(String),
    Warning(String),
}

struct Setup<'a> {
    privs: &'a Privileges,
    apt_updated: bool,
    done: usize,
    present: usize,
    warnings: Vec<String>,
}

/// Runs every step; fails at the first step that cannot be completed.
pub fn run(opts: Options, privs: &Privileges) -> Result<()> {
    let start = Instant::now();
    let mut s = Setup {
        privs,
        apt_updated: false,
        done: 0,
        present: 0,
        warnings: Vec::new(),
    };
    let mut packages = BUILD_PACKAGES.to_vec();
    if opts.test_deps {
        packages.extend_from_slice(TEST_PACKAGES);
    }
    let label = packages.join(" ");
    let outcome = s.ensure_packages(&packages)?;
    s.report(&format!("packages {label}"), outcome);

    let (version, llvm) = debian_rustc()?;
    s.report(
        "Debian rustc",
        Outcome::Present(format!("{version}, LLVM {llvm}")),
    );
    let llvm_dev = format!("llvm-{llvm}-dev");
    let outcome = s.ensure_packages(&[llvm_dev.as_str()])?;
    s.report(&llvm_dev, outcome);

    if !Path::new(CORE_SRC).is_file() {
        bail!(
            "{CORE_SRC} is missing although rust-web-src is installed: reinstall it with \
             `apt-get install --reinstall rust-web-src`"
        );
    }
    s.report("core library source", Outcome::Present(CORE_SRC.into()));

    let outcome = ensure_toolchain()?;
    s.report(&format!("rustup toolchain {TOOLCHAIN}"), outcome);
    let outcome = ensure_bpf_linker(llvm)?;
    s.report(&format!("bpf-linker {BPF_LINKER_VERSION}"), outcome);
    if opts.test_deps {
        let outcome = ensure_cargo_deny()?;
        s.report(&format!("cargo-deny {CARGO_DENY_VERSION}"), outcome);
    }

    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("read /proc/self/mountinfo")?;
    for &(fstype, point) in MOUNTS {
        let outcome = s.ensure_mount(&mountinfo, fstype, point)?;
        s.report(&format!("{fstype} at {point}"), outcome);
    }

    let warnings = if s.warnings.is_empty() {
        String::new()
    } else {
        format!(
            ", {} warning(s): {}",
            s.warnings.len(),
            s.warnings.join("; ")
        )
    };
    eprintln!(
        "setup: finished in {:.2} s: {} step(s) did something, {} already in place{warnings}",
        start.elapsed().as_secs_f64(),
        s.done,
        s.present
    );
    Ok(())
}

impl Setup<'_> {
    fn report(&mut self, what: &str, outcome: Outcome) {
        match outcome {
            Outcome::Present(detail) => {
                self.present += 1;
                eprintln!("setup: {what}: already in place ({detail})");
            }
            Outcome::Done(detail) => {
                self.done += 1;
                eprintln!("setup: {what}: {detail}");
            }
            Outcome::Warning(detail) => {
                eprintln!("setup: {what}: WARNING: {detail}");
                self.warnings.push(format!("{what}: {detail}"));
            }
        }
    }

    fn ensure_packages(&mut self, packages: &[&str]) -> Result<Outcome> {
        let missing = missing_packages(packages)?;
        if missing.is_empty() {
            return Ok(Outcome::Present("installed".into()));
        }
        eprintln!("setup: installing {}", missing.join(" "));
        if !self.apt_updated {
            let update = Cmd::new("apt-get").args(["update", "-q"]).no_stdin();
            self.privs.as_root(&update)?.run()?;
            self.apt_updated = true;
        }
        let install = Cmd::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .no_stdin();
        self.privs.as_root(&install)?.run().with_context(|| {
            format!(
                "could not install {}: this setup targets Debian 12 (bookworm) with its \
                 bookworm-updates/security repositories enabled (rustc-web, llvm-N-dev)",
                missing.join(" ")
            )
        })?;
        let still = missing_packages(&missing.iter().map(String::as_str).collect::<Vec<_>>())?;
        if !still.is_empty() {
            bail!("apt-get did not install {}", still.join(" "));
        }
        Ok(Outcome::Done(format!("installed {}", missing.join(" "))))
    }

    fn ensure_mount(&mut self, mountinfo: &str, fstype: &str, point: &str) -> Result<Outcome> {
        if is_mounted(mountinfo, fstype, point) {
            return Ok(Outcome::Present("mounted".into()));
        }
        let mount = Cmd::new("mount")
            .args(["-t", fstype, fstype, point])
            .no_stdin();
        if self.privs.get() == Privilege::None {
            // Building does not need it; running the daemon and the privileged tests do, and
            // those need root anyway.
            return Ok(Outcome::Warning(format!(
                "not mounted, and `{}` needs root; the daemon and the privileged tests need it",
                mount.display()
            )));
        }
        self.privs.as_root(&mount)?.run()?;
        Ok(Outcome::Done("mounted".into()))
    }
}

/// The packages of `packages` that are not installed, asking dpkg.
fn missing_packages(packages: &[&str]) -> Result<Vec<String>> {
    let out = Cmd::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${db:Status-Abbrev}\n"])
        .args(packages)
        .output()
        .context("tcpwatch's setup supports Debian 12 (bookworm) only: dpkg-query is needed")?;
    // Exit status 1 just means some package is unknown to dpkg: parse what it printed.
    let installed = installed_packages(&out.stdout);
    Ok(packages
        .iter()
        .filter(|p| !installed.contains(p))
        .map(|p| (*p).to_owned())
        .collect())
}

/// Names of installed packages in `dpkg-query -W -f='${Package}\t${db:Status-Abbrev}\n'`
/// output (status `ii`).
pub fn installed_packages(dpkg_output: &str) -> Vec<&str> {
    dpkg_output
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(name, _)| name.split(':').next().unwrap_or(name))
        .collect()
}

/// `rustc -V` and the LLVM major version of Debian's rustc-web.
fn debian_rustc() -> Result<(String, u32)> {
    let out = Cmd::new(DEBIAN_RUSTC).arg("-vV").stdout()?;
    let version = out.lines().next().unwrap_or_default().trim().to_owned();
    let llvm = llvm_major(&out).with_context(|| {
        format!("no `LLVM version: N.x` line in `{DEBIAN_RUSTC} -vV` output:\n{out}")
    })?;
    Ok((version, llvm))
}

/// The LLVM major version in `rustc -vV` output (`LLVM version: 22.1.8` gives 22).
pub fn llvm_major(rustc_vv: &str) -> Option<u32> {
    let v = rustc_vv
        .lines()
        .find_map(|l| l.trim().strip_prefix("LLVM version:"))?;
    v.trim().split('.').next()?.parse().ok()
}

fn ensure_toolchain() -> Result<Outcome> {
    let list = Cmd::new("rustup")
        .args(["toolchain", "list"])
        .stdout()
        .context(
            "rustup is needed (https://rustup.rs; `. \"$HOME/.cargo/env\"` puts it in PATH)",
        )?;
    if has_toolchain(&list, TOOLCHAIN) {
        return Ok(Outcome::Present("linked".into()));
    }
    Cmd::new("rustup")
        .args(["toolchain", "link", TOOLCHAIN, "/usr"])
        .no_stdin()
        .run()?;
    Ok(Outcome::Done("linked to /usr".into()))
}

/// Whether `rustup toolchain list` output has a toolchain called `name`.
pub fn has_toolchain(list: &str, name: &str) -> bool {
    list.lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// Whether `bpf-linker --version` output is exactly version `want`.
pub fn is_bpf_linker_version(output: &str, want: &str) -> bool {
    output.trim().strip_prefix("bpf-linker ") == Some(want)
}

fn cargo_bin_dir() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin"))
}

fn ensure_bpf_linker(llvm: u32) -> Result<Outcome> {
    let on_path = find_in_path("bpf-linker");
    let candidate = on_path
        .clone()
        .or_else(|| cargo_bin_dir().map(|d| d.join("bpf-linker")));
    let current = candidate
        .as_ref()
        .and_then(|p| Cmd::new(p).arg("--version").output().ok())
        .map(|o| o.stdout.trim().to_owned());
    if let Some(v) = &current
        && is_bpf_linker_version(v, BPF_LINKER_VERSION)
    {
        if on_path.is_none() {
            return Ok(Outcome::Warning(format!(
                "installed in {} but that directory is not in PATH; add it (`. \"$HOME/.cargo/env\"`)",
                candidate
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )));
        }
        return Ok(Outcome::Present("installed".into()));
    }
    let was = current.map_or_else(|| "not installed".to_owned(), |v| format!("found `{v}`"));
    eprintln!("setup: bpf-linker {BPF_LINKER_VERSION}: {was}; building it (about 1 minute)");
    Cmd::new(crate::cmd::cargo())
        .args([
            "install",
            "--locked",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm}"),
        ])
        .env("LLVM_PREFIX", format!("/usr/lib/llvm-{llvm}"))
        .no_stdin()
        .run()?;
    Ok(Outcome::Done(format!("installed ({was} before)")))
}

fn ensure_cargo_deny() -> Result<Outcome> {
    let current = Cmd::new(crate::cmd::cargo())
        .args(["deny", "--version"])
        .output()
        .ok()
        .map(|o| o.stdout.trim().to_owned());
    if current
        .as_deref()
        .is_some_and(|v| v == format!("cargo-deny {CARGO_DENY_VERSION}"))
    {
        return Ok(Outcome::Present("installed".into()));
    }
    eprintln!("setup: cargo-deny {CARGO_DENY_VERSION}: building it (about 5 minutes on 2 cores)");
    Cmd::new(crate::cmd::cargo())
        .args([
            "install",
            "--locked",
            &format!("cargo-deny@{CARGO_DENY_VERSION}"),
        ])
        .no_stdin()
        .run()?;
    Ok(Outcome::Done("installed".into()))
}

/// Whether `/proc/self/mountinfo` text has a `fstype` file system mounted at `point`.
pub fn is_mounted(mountinfo: &str, fstype: &str, point: &str) -> bool {
    mountinfo.lines().any(|line| {
        let Some((left, right)) = line.split_once(" - ") else {
            return false;
        };
        let mount_point = left.split(' ').nth(4).map(unescape_mountinfo);
        let fs = right.split(' ').next();
        mount_point.as_deref() == Some(point) && fs == Some(fstype)
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(oct), 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let out = "rustc 1.96.0 (abc 2026-01-01) (built from a source tarball)\n\
                   binary: rustc\ncommit-hash: unknown\nhost: x86_64-unknown-linux-gnu\n\
                   release: 1.96.0\nLLVM version: 22.1.8\n";
        assert_eq!(llvm_major(out), Some(22));
        assert_eq!(llvm_major("LLVM version: 19\n"), Some(19));
        assert_eq!(llvm_major("rustc 1.96.0\nhost: x86_64\n"), None);
        assert_eq!(llvm_major("LLVM version: unknown\n"), None);
    }

    #[test]
    fn bpf_linker_version_must_match_exactly() {
        assert!(is_bpf_linker_version("bpf-linker 0.13.0\n", "0.13.0"));
        assert!(!is_bpf_linker_version("bpf-linker 0.13.1\n", "0.13.0"));
        assert!(!is_bpf_linker_version("bpf-linker 0.13.0-rc1\n", "0.13.0"));
        assert!(!is_bpf_linker_version("", "0.13.0"));
    }

    #[test]
    fn toolchain_list() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    debian-rustc-web-old\ndebian-rustc-web\n";
        assert!(has_toolchain(list, "debian-rustc-web"));
        assert!(!has_toolchain(
            "stable-x86_64-unknown-linux-gnu (default)\n",
            "debian-rustc-web"
        ));
        assert!(!has_toolchain("debian-rustc-web-old\n", "debian-rustc-web"));
    }

    #[test]
    fn mountinfo() {
        let info = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
                    23 27 0:22 / /sys rw,relatime - sysfs sysfs rw\n\
                    50 23 0:40 / /sys/kernel/tracing rw,nosuid shared:5 - tracefs tracefs rw\n\
                    51 23 0:41 / /sys/fs/bpf rw,relatime - bpf none rw,mode=700\n\
                    52 27 0:42 / /mnt/with\\040space rw - tmpfs tmpfs rw\n";
        assert!(is_mounted(info, "tracefs", "/sys/kernel/tracing"));
        assert!(is_mounted(info, "bpf", "/sys/fs/bpf"));
        assert!(is_mounted(info, "tmpfs", "/mnt/with space"));
        assert!(!is_mounted(info, "bpf", "/sys/kernel/tracing"));
        assert!(!is_mounted(info, "debugfs", "/sys/kernel/debug"));
        assert!(!is_mounted("garbage line\n", "bpf", "/sys/fs/bpf"));
    }

    #[test]
    fn dpkg_query_output() {
        let out = "rustc-web\tii \ncargo-web\trc \nllvm-22-dev:amd64\tii \ntmux\tun \n";
        assert_eq!(installed_packages(out), vec!["rustc-web", "llvm-22-dev"]);
    }
}
