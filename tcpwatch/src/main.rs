//! tcpwatch: eBPF TCP connection health monitor.
//!
//! `tcpwatch daemon` runs the monitor; `tcpwatch snapshot` prints one sweep;
//! `tcpwatch check-config` validates a configuration file.
mod alerts;
mod daemon;
mod event_reader;
mod host;
mod kernel;
mod serve;
mod snapshot;
mod state;
mod view;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tcpwatch_core::config::{Config, LogFormat};
use tcpwatch_core::model::TcpState;

/// Exit code for configuration errors.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "tcpwatch",
    version,
    about = "eBPF TCP connection health monitor"
)]
struct Cli {
    /// Configuration file (TOML). Without it the embedded defaults are used.
    #[arg(long, short, global = true, env = "TCPWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Override one setting, e.g. `--set detectors.close_wait.threshold_seconds=10`.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Treat BPF iterators as absent (tests the refusal path on kernels that have them).
    #[arg(long, global = true, hide = true)]
    pretend_no_iter: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the monitor: API and metrics on `daemon.listen` (default 127.0.0.1:9977).
    Daemon {
        /// Directory (on bpffs) where the kernel-side socket state is pinned so that socket
        /// ages and retransmit chains survive a restart.
        #[arg(long, default_value = "/sys/fs/bpf/tcpwatch", value_name = "DIR")]
        pin_dir: PathBuf,
        /// Do not pin: kernel-side history starts anew at every start.
        #[arg(long)]
        no_pin: bool,
        /// Size of the state-event ring buffer: a power of two, at least one page.
        #[arg(
            long,
            default_value_t = tcpwatch_common::hooks::map_size::EVENTS_BYTES,
            value_parser = parse_ringbuf_bytes
        )]
        ringbuf_bytes: u32,
    },
    /// Sweep every TCP socket once and print it (like `ss -tanpi`, plus tcpwatch's columns).
    Snapshot {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only sockets in this state (e.g. `CLOSE_WAIT`, `close-wait`, `ESTAB`).
        #[arg(long, value_parser = parse_state)]
        state: Option<TcpState>,
        /// Only sockets with this local or remote port.
        #[arg(long)]
        port: Option<u16>,
        /// Print the exposure audit instead (`docs/exposure.md`): how long each process's
        /// connections would wait for a vanished peer.
        #[arg(long)]
        exposure: bool,
        /// For `cargo xtask bench`: after the sweep, walk every namespace again with a
        /// reference `iter/tcp` program that only counts (the floor of a sweep), and report
        /// it as `sweep.reference_walk` in the JSON.
        #[arg(long, hide = true)]
        walk_reference: bool,
    },
    /// Validate the configuration (file and --set overrides) and print the effective one.
    CheckConfig,
    /// Interactive view of a running daemon's connections and findings (`docs/top.md`).
    Top {
        /// The daemon's API address (`daemon.listen`).
        #[arg(long, default_value = "127.0.0.1:9977")]
        addr: String,
        /// Print one frame as plain text and exit.
        #[arg(long)]
        once: bool,
        /// With --once: print `{"connections":[...],"findings":[...]}` instead.
        #[arg(long)]
        json: bool,
        /// No daemon running: load the programs in this process (root) and show them.
        #[arg(long)]
        standalone: bool,
    },
}

/// `tcpwatch top --standalone`: runs the daemon on a thread of this process, with its API
/// on a free loopback port and no pinning (a running daemon's state is left alone), and
/// returns that address once the first sweep is done.
fn embedded_daemon(cfg: &Config, opts: daemon::DaemonOptions) -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cfg = cfg.clone();
    cfg.daemon.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tcpwatch-daemon".into())
        .spawn(move || {
            let result =
                daemon::prepare(&cfg, opts).and_then(|prepared| run_prepared(cfg, prepared));
            let _ = tx.send(result);
        })?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        match rx.try_recv() {
            Ok(Err(e)) => return Err(e.context("--standalone: the embedded daemon failed")),
            Ok(Ok(())) => anyhow::bail!("--standalone: the embedded daemon stopped"),
            Err(_) => {}
        }
        if embedded_ready(port) {
            return Ok(format!("127.0.0.1:{port}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!("--standalone: the embedded daemon was not ready within 30 s")
}

fn embedded_ready(port: u16) -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(2)))
        .build()
        .into();
    agent
        .get(&format!("http://127.0.0.1:{port}/readyz"))
        .call()
        .is_ok_and(|r| r.status() == 200)
}

fn parse_ringbuf_bytes(s: &str) -> Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|e| format!("`{s}` is not a byte count: {e}"))?;
    if v < 4096 || !v.is_power_of_two() {
        return Err(format!(
            "{v} must be a power of two of at least 4096 (one page)"
        ));
    }
    Ok(v)
}

fn parse_state(s: &str) -> Result<TcpState, String> {
    TcpState::parse(s).ok_or_else(|| {
        format!("unknown TCP state `{s}` (use e.g. ESTABLISHED, CLOSE_WAIT, LISTEN, TIME_WAIT)")
    })
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut cfg = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
            Config::from_toml_str(&text)
                .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?
        }
        None => Config::default_embedded()?,
    };
    for o in &cli.overrides {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {o}: expected KEY=VALUE"))?;
        cfg.apply_override(k.trim(), v.trim())
            .map_err(|e| anyhow::anyhow!("--set {o}: {e}"))?;
    }
    // The pushing commands also read `ca_file` and the credential files.
    let pushes = match &cli.command {
        Command::Daemon { .. } | Command::CheckConfig => true,
        Command::Top { standalone, .. } => *standalone,
        Command::Snapshot { .. } => false,
    };
    alerts::check_config(&cfg.alertmanager, pushes)?;
    Ok(cfg)
}

/// Logs go to stderr at `info` (`TCPWATCH_LOG` overrides), except under `tcpwatch top`, whose
/// screen they would draw over: there only `TCPWATCH_LOG` turns them on.
fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TCPWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// glibc gives every thread that allocates its own heap arena, and a daemon that parses
/// sweeps on one thread and serves them on others then holds several heaps' worth of freed
/// memory. Two arenas keep RSS close to what is live.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tcpwatch: configuration error: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let quiet = matches!(cli.command, Command::Top { .. });
    init_logging(cfg.daemon.log_format, if quiet { "off" } else { "info" });
    let opts = daemon::DaemonOptions {
        pretend_no_iter: cli.pretend_no_iter,
        pin: None,
        ringbuf_bytes: None,
    };
    let result = match &cli.command {
        Command::Top {
            addr,
            once,
            json,
            standalone,
        } => {
            let addr = if *standalone {
                embedded_daemon(&cfg, opts.clone())
            } else {
                Ok(addr.clone())
            };
            addr.and_then(|addr| {
                tcpwatch_top::run(tcpwatch_top::TopOptions {
                    addr,
                    once: *once,
                    json: *json,
                    standalone: false,
                })
            })
        }
        Command::CheckConfig => match serve::check_web_configs(&cfg)
            .and_then(|web| Ok((web, toml::to_string_pretty(&cfg)?)))
        {
            Ok((web, s)) => {
                for line in web {
                    println!("# {line}");
                }
                println!("# configuration is valid; effective settings:\n{s}");
                Ok(())
            }
            Err(e) => Err(e),
        },
        Command::Snapshot {
            json,
            state,
            port,
            exposure,
            walk_reference,
        } => {
            let args = snapshot::SnapshotArgs {
                json: *json,
                state: *state,
                port: *port,
                exposure: *exposure,
                walk_reference: *walk_reference,
            };
            snapshot::run(&cfg, &args, opts.clone())
        }
        Command::Daemon {
            pin_dir,
            no_pin,
            ringbuf_bytes,
        } => {
            let opts = daemon::DaemonOptions {
                pin: (!no_pin).then(|| pin_dir.clone()),
                ringbuf_bytes: Some(*ringbuf_bytes),
                ..opts
            };
            // Load and drop capabilities first: the runtime's threads inherit the reduced set.
            daemon::prepare(&cfg, opts).and_then(|prepared| run_prepared(cfg, prepared))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tcpwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the daemon on its runtime. On the way out the runtime waits at most a second for
/// blocking work still in flight (an owner scan of `/proc`, a sweep being applied): a
/// SIGTERM is answered promptly even at 100 000 connections, and the kernel side needs no
/// clean-up (the pinned maps stay; the programs go with the process).
fn run_prepared(cfg: Config, prepared: daemon::Prepared) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(daemon::run(cfg, prepared));
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
