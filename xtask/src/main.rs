//! tcpwatch's task runner: `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! - `setup [--test-deps]`: install the eBPF toolchain (and the test packages), idempotently;
//! - `build [--release]`: setup, then `cargo build -p tcpwatch`;
//! - `run [-- <daemon args>]`: setup, release build, then exec `tcpwatch daemon` as root;
//! - `test [--quick]`: setup with test packages, fmt check, clippy, `cargo test --workspace`.
//! - `bench [--smoke]`: the performance suite (root); writes `target/bench/bench.json` and
//!   `docs/performance.md`.
//! - `vm-test [--quick] [--kernel K]...`: the privileged scenarios on the host kernel and on
//!   Debian kernels booted under QEMU (docs/kernels.md).

mod bench;
mod cmd;
mod setup;
mod tasks;
mod vmtest;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd::Privileges;

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "tcpwatch's task runner")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install what the eBPF build needs (Debian 12): rustc-web, rust-web-src, llvm-N-dev,
    /// the debian-rustc-web rustup toolchain, bpf-linker; mount tracefs and bpffs.
    Setup {
        /// Also install the integration tests' packages (iproute2, nftables, tmux,
        /// prometheus, prometheus-alertmanager, nginx, podman, bpftool, ...: `TEST_PACKAGES`).
        #[arg(long)]
        test_deps: bool,
    },
    /// Setup, then build the tcpwatch binary (with its embedded eBPF programs).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Setup, release build, then run `tcpwatch daemon <args>` as root (via `sudo -n` if
    /// needed).
    Run {
        /// Arguments for `tcpwatch daemon`, e.g. `cargo xtask run -- --config tcpwatch.toml`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup with test packages, `cargo fmt --check`, clippy, `cargo test --workspace`.
    /// Privileged integration tests need root.
    Test {
        /// Skip setup and the format check.
        #[arg(long)]
        quick: bool,
    },
    /// Performance suite (root): kernel cost per event, fast-path overhead against peers,
    /// sweep scale, daemon cost; prints a table, writes target/bench/bench.json and
    /// docs/performance.md.
    Bench {
        /// Short CI mode (< 2 minutes): small sizes, one round, goals not enforced.
        #[arg(long)]
        smoke: bool,
        /// Run only this phase (`kernel-cost`, `overhead`, `scale`, `daemon`): its results
        /// go to target/bench/ only (docs/performance.md is not replaced), goals not enforced.
        #[arg(long, value_name = "PHASE")]
        phase: Option<String>,
        /// Measure this tcpwatch binary instead of building one (A/B comparisons).
        #[arg(long, value_name = "PATH")]
        bin: Option<std::path::PathBuf>,
        /// Internal: hold `NETNS_PATH:SOCKETS` idle connections until stdin closes.
        #[arg(long, hide = true, value_name = "NETNS_PATH:SOCKETS")]
        pool_helper: Option<String>,
    },
    /// Run the privileged scenarios on the host's kernel and on Debian kernels booted under
    /// QEMU (5.10 from bullseye, 6.1 from bookworm, 6.12 from bookworm-backports); cached in
    /// target/vm-test/.
    VmTest {
        /// Only the host kernel and 5.10, the oldest (CI-sized).
        #[arg(long)]
        quick: bool,
        /// Kernels to test instead of the default set: host, 5.10, 6.1, 6.12 or a package name
        /// (repeatable).
        #[arg(long)]
        kernel: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let privs = Privileges::default();
    let result = match cli.command {
        Command::Setup { test_deps } => setup::run(setup::Options { test_deps }, &privs),
        Command::Build { release } => tasks::build(release, &privs),
        Command::Run { args } => tasks::run(args, &privs),
        // Prints its own errors and verdict as the last line: nothing may follow it.
        Command::Test { quick } => return tasks::test(quick, &privs),
        Command::Bench {
            smoke,
            phase,
            bin,
            pool_helper,
        } => bench::run(
            &bench::Options { smoke, phase, bin },
            pool_helper.as_deref(),
            &privs,
        ),
        Command::VmTest { quick, kernel } => vmtest::run(
            &vmtest::Options {
                quick,
                kernels: kernel,
            },
            &privs,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not anyhow's `Debug` report: no backtrace noise, the message is the point.
            eprintln!("\nerror: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from(["xtask", "run", "--", "--config", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Command::Run { args } if args == ["--config", "x.toml"]));
        let cli = Cli::try_parse_from(["xtask", "run", "--config", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Command::Run { args } if args == ["--config", "x.toml"]));
        let cli = Cli::try_parse_from(["xtask", "test", "--quick"]).unwrap();
        assert!(matches!(cli.command, Command::Test { quick: true }));
        let cli = Cli::try_parse_from(["xtask", "setup", "--test-deps"]).unwrap();
        assert!(matches!(cli.command, Command::Setup { test_deps: true }));
        let cli = Cli::try_parse_from(["xtask", "build"]).unwrap();
        assert!(matches!(cli.command, Command::Build { release: false }));
        let cli = Cli::try_parse_from(["xtask", "bench", "--smoke"]).unwrap();
        assert!(matches!(cli.command, Command::Bench { smoke: true, .. }));
        assert!(Cli::try_parse_from(["xtask", "bench", "--rounds"]).is_err());
        let cli = Cli::try_parse_from(["xtask", "bench", "--phase", "kernel-cost"]).unwrap();
        assert!(matches!(cli.command, Command::Bench { phase: Some(p), .. } if p == "kernel-cost"));
    }
}
