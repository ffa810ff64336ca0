//! The tools measured on the same load: the tcpwatch daemon and its peers (`ss -tani` polled
//! every second, a bpftrace tcpstates + tcpretrans, bcc's tcpstates + tcpretrans). Each runs
//! behind a guard that stops it on drop.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::sys::{self, ChildGuard, free_port, http_get, metric};

/// How long a peer may take to start before it is reported as not running.
const START_LIMIT: Duration = Duration::from_secs(20);

/// tcpstates + tcpretrans in bpftrace: one line per state change and per retransmission.
/// (No `BEGIN` marker: with `-B full` its line stays in bpftrace's stdout buffer until the
/// buffer fills, so readiness is read from the kernel instead, see [`Ready::Attached`].)
const BPFTRACE_SCRIPT: &str = r#"tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  printf("%llu %d %s %d %d %d %d\n", nsecs, pid, comm, args->sport, args->dport,
         args->oldstate, args->newstate);
}
tracepoint:tcp:tcp_retransmit_skb {
  printf("%llu RETRANS %d %d %d\n", nsecs, args->sport, args->dport, args->state);
}"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Tcpwatch,
    SsPoll,
    Bpftrace,
    Bcc,
}

impl Tool {
    pub const ALL: [Self; 4] = [Self::Tcpwatch, Self::SsPoll, Self::Bpftrace, Self::Bcc];

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcpwatch => "tcpwatch daemon",
            Self::SsPoll => "ss -tani every 1 s",
            Self::Bpftrace => "bpftrace tcpstates+tcpretrans",
            Self::Bcc => "bcc tcpstates+tcpretrans",
        }
    }
}

/// What starting a tool needs.
pub struct Ctx {
    pub bin: PathBuf,
    pub netns: String,
    pub log: PathBuf,
}

/// The running tcpwatch daemon, on its own port and without pinning.
pub struct Daemon {
    guard: ChildGuard,
    pub port: u16,
}

impl Daemon {
    pub fn start(bin: &Path, sets: &[&str], log: &Path) -> Result<Self> {
        let port = free_port()?;
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let mut cmd = Command::new(bin);
        cmd.args(["daemon", "--no-pin", "--set"])
            .arg(format!("daemon.listen=\"127.0.0.1:{port}\""));
        for s in sets {
            cmd.args(["--set", s]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut d = Self {
            guard: ChildGuard {
                child,
                what: "tcpwatch daemon".into(),
            },
            port,
        };
        let t0 = Instant::now();
        loop {
            sys::check_stop()?;
            if let Some(st) = d.guard.exited() {
                bail!(
                    "tcpwatch daemon exited ({st}) during start; see {}",
                    log.display()
                );
            }
            if http_get(port, "/readyz").is_ok_and(|(s, ..)| s == 200) {
                return Ok(d);
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!(
                    "tcpwatch daemon not ready within 30 s; see {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// `/metrics`: (body, scrape time).
    pub fn metrics(&self) -> Result<(String, Duration)> {
        let (st, body, took) = http_get(self.port, "/metrics")?;
        if st != 200 {
            bail!("/metrics answered {st}");
        }
        Ok((body, took))
    }

    /// Program id -> name of the daemon's programs (`/api/v1/status` `programs`).
    pub fn program_names(&self) -> Result<std::collections::BTreeMap<u64, String>> {
        let (st, body, _) = http_get(self.port, "/api/v1/status")?;
        if st != 200 {
            bail!("/api/v1/status answered {st}");
        }
        let v: serde_json::Value = serde_json::from_str(&body).context("status JSON")?;
        Ok(v["programs"]
            .as_array()
            .context("/api/v1/status has no `programs`")?
            .iter()
            .filter_map(|p| Some((p["id"].as_u64()?, p["program"].as_str()?.to_owned())))
            .collect())
    }

    /// Waits until the table holds at least `n` connections; returns the count.
    pub fn wait_tracking(&self, n: usize, limit: Duration) -> Result<f64> {
        let t0 = Instant::now();
        loop {
            sys::check_stop()?;
            let (m, _) = self.metrics()?;
            let have = metric(&m, "tcpwatch_table_connections").unwrap_or(0.0);
            if have >= n as f64 {
                return Ok(have);
            }
            if t0.elapsed() > limit {
                bail!("the daemon tracks {have} connections after {limit:?}, expected {n}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A started tool; stopped on drop.
pub enum Running {
    Daemon {
        daemon: Daemon,
    },
    SsPoll {
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    },
    Procs {
        procs: Vec<ChildGuard>,
    },
}

impl Running {
    /// The tracer processes' pids.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Self::Procs { procs } => procs.iter().map(ChildGuard::pid).collect(),
            Self::Daemon { daemon } => vec![daemon.pid()],
            Self::SsPoll { .. } => Vec::new(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Self::SsPoll { stop, thread } = self {
            stop.store(true, Ordering::SeqCst);
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Starts `tool`; an error says why it does not run.
pub fn start(tool: Tool, ctx: &Ctx) -> Result<Running> {
    match tool {
        Tool::Tcpwatch => Ok(Running::Daemon {
            daemon: Daemon::start(&ctx.bin, &[], &ctx.log)?,
        }),
        Tool::SsPoll => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let ns = ctx.netns.clone();
            let thread = std::thread::spawn(move || {
                while !flag.load(Ordering::SeqCst) && !sys::stopped() {
                    let t0 = Instant::now();
                    let _ = Command::new("ss")
                        .args(["-N", &ns, "-tani"])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    while t0.elapsed() < Duration::from_secs(1) && !flag.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            });
            Ok(Running::SsPoll {
                stop,
                thread: Some(thread),
            })
        }
        Tool::Bpftrace => {
            let mut cmd = Command::new("bpftrace");
            cmd.args(["-B", "full", "-e", BPFTRACE_SCRIPT]);
            let hooks = ["inet_sock_set_state", "tcp_retransmit_skb"];
            let c = spawn_ready(cmd, "bpftrace", Ready::Attached(&hooks))?;
            Ok(Running::Procs { procs: vec![c] })
        }
        Tool::Bcc => {
            let mut procs = Vec::new();
            let mut reasons = Vec::new();
            for prog in ["tcpstates-bpfcc", "tcpretrans-bpfcc"] {
                let mut cmd = Command::new(prog);
                cmd.env("PYTHONUNBUFFERED", "1");
                // Headers printed once attached (bcc prints some errors on stdout too).
                let ready = |l: &str| l.contains("OLDSTATE") || l.contains("Tracing retrans");
                match spawn_ready(cmd, prog, Ready::Line(Box::new(ready))) {
                    Ok(c) => procs.push(c),
                    Err(e) => reasons.push(format!("{prog}: {e}")),
                }
            }
            if !reasons.is_empty() {
                bail!("{}", reasons.join("; "));
            }
            Ok(Running::Procs { procs })
        }
    }
}

/// How a tracer shows it is attached.
pub enum Ready<'a> {
    /// A stdout line it prints once attached (the tracer must flush it: line-buffered output).
    Line(Box<dyn Fn(&str) -> bool + Send>),
    /// The kernel lists a perf-event attachment of one of its programs to each of these
    /// tracepoints (`bpftool perf`): independent of the tracer's output buffering.
    Attached(&'a [&'a str]),
}

/// Spawns a tracer whose stdout is drained and discarded (as if it printed to /dev/null) and
/// waits until it is [`Ready`]. Fails with the tracer's own error when it exits or is not
/// ready within [`START_LIMIT`].
pub fn spawn_ready(mut cmd: Command, what: &str, ready: Ready<'_>) -> Result<ChildGuard> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let is_ready = Arc::new(AtomicBool::new(false));
    let stderr_tail = Arc::new(Mutex::new(Vec::<String>::new()));
    let (line_ready, hooks) = match ready {
        Ready::Line(f) => (Some(f), &[][..]),
        Ready::Attached(h) => (None, h),
    };
    if let Some(out) = child.stdout.take() {
        let flag = Arc::clone(&is_ready);
        let tail = Arc::clone(&stderr_tail);
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 16, out);
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                if let Some(ready) = line_ready.as_ref()
                    && !flag.load(Ordering::Relaxed)
                {
                    if ready(&line) {
                        flag.store(true, Ordering::SeqCst);
                    } else if let Ok(mut t) = tail.lock() {
                        t.push(line.trim_end().to_owned());
                    }
                }
                line.clear();
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        let tail = Arc::clone(&stderr_tail);
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut t) = tail.lock() {
                    t.push(l);
                    if t.len() > 50 {
                        t.remove(0);
                    }
                }
            }
        });
    }
    let mut guard = ChildGuard {
        child,
        what: what.to_owned(),
    };
    let t0 = Instant::now();
    loop {
        sys::check_stop()?;
        if is_ready.load(Ordering::SeqCst) || attached(guard.pid(), hooks) {
            return Ok(guard);
        }
        if let Some(st) = guard.exited() {
            std::thread::sleep(Duration::from_millis(100)); // let stderr drain
            let lines = stderr_tail.lock().map(|t| t.clone()).unwrap_or_default();
            bail!("exited ({st}): {}", failure_reason(&lines));
        }
        if t0.elapsed() > START_LIMIT {
            bail!("not ready within {} s", START_LIMIT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` has a program attached to every tracepoint of `hooks` (none: false).
fn attached(pid: u32, hooks: &[&str]) -> bool {
    if hooks.is_empty() {
        return false;
    }
    let Ok(list) = sys::perf_attachments() else {
        return false;
    };
    hooks
        .iter()
        .all(|h| list.iter().any(|a| a.pid == pid && a.tracepoint == *h))
}

/// The most telling line of a tracer's stderr.
pub fn failure_reason(lines: &[String]) -> String {
    let pick = lines
        .iter()
        .find(|l| l.contains("kernel headers") || l.contains("not supported"))
        .or_else(|| {
            lines
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty() && !l.starts_with(' '))
        })
        .map_or("no error output", String::as_str);
    let mut s = pick.trim().to_owned();
    s.truncate(200);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_failure_reason() {
        let lines: Vec<String> = [
            "sh: 1: modprobe: not found",
            "Unable to find kernel headers. Try rebuilding kernel with CONFIG_IKHEADERS=m",
            "Traceback (most recent call last):",
            "  File \"/usr/sbin/tcpstates-bpfcc\", line 422, in <module>",
            "Exception: Failed to compile BPF module <text>",
        ]
        .map(String::from)
        .to_vec();
        assert!(failure_reason(&lines).starts_with("Unable to find kernel headers"));
        assert_eq!(
            failure_reason(&lines[2..]),
            "Exception: Failed to compile BPF module <text>"
        );
        assert_eq!(failure_reason(&[]), "no error output");
    }
}
