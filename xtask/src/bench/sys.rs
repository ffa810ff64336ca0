//! The bench's contact with the system, each behind a guard that undoes it on drop: network
//! namespaces, `kernel.bpf_stats_enabled`, child processes; plus `/proc` readers, `bpftool`
//! and the interruption flag. Namespaces, HTTP and metric reading come from `tcpwatch-testkit`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic store; the bench's bounded loops poll it and unwind, so
    // every guard's Drop runs.
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGINT, SIGTERM and SIGHUP set the stop flag instead of killing the bench.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let handler: extern "C" fn(libc::c_int) = on_signal;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

pub fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// An error once the bench was interrupted: phases call it between steps.
pub fn check_stop() -> Result<()> {
    if stopped() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps up to `d`, waking early when interrupted.
pub fn sleep(d: Duration) {
    let end = Instant::now() + d;
    while !stopped() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Raises `RLIMIT_NOFILE` to `n` if possible, else as far as the hard limit allows.
pub fn raise_nofile(n: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to a rlimit struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        bail!("getrlimit: {}", std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= n {
        return Ok(());
    }
    if lim.rlim_max >= n {
        return set_nofile(n, lim.rlim_max);
    }
    let nr_open: u64 = read_trimmed("/proc/sys/fs/nr_open")?
        .parse()
        .context("fs.nr_open")?;
    if nr_open < n {
        std::fs::write("/proc/sys/fs/nr_open", n.to_string()).context("raise fs.nr_open")?;
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE, which root may lack (containers): then
    // the soft limit goes up to the hard one.
    set_nofile(n, n).or_else(|_| set_nofile(lim.rlim_max, lim.rlim_max))
}

fn set_nofile(cur: u64, max: u64) -> Result<()> {
    let new = libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: valid pointer to a rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const new) } != 0 {
        bail!(
            "setrlimit(RLIMIT_NOFILE, {cur}/{max}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

pub fn read_trimmed(path: &str) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("read {path}"))?
        .trim()
        .to_owned())
}

pub use tcpwatch_testkit::netns::{Netns, enter_netns};
pub use tcpwatch_testkit::try_run as run;

const NETNS_PREFIX: &str = "twb-";

/// A network namespace made by the bench (`twb-<pid>-<tag>`), deleted on drop, with a wide
/// ephemeral port range and `TIME_WAIT` reuse: churn and 50k-pair pools must not run out of
/// ports.
pub fn netns(tag: &str) -> Result<Netns> {
    let name = format!("{NETNS_PREFIX}{}-{tag}", std::process::id());
    let _ = run("ip", &["netns", "del", &name]);
    let ns = Netns::create(name)?;
    ns.try_exec(
        "sysctl",
        &[
            "-q",
            "-w",
            "net.ipv4.ip_local_port_range=1024 65535",
            "net.ipv4.tcp_tw_reuse=1",
        ],
    )?;
    Ok(ns)
}

/// Removes namespaces left by a bench that was killed (its pid is gone).
pub fn remove_stale_netns() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("bench: removing stale namespace {name}");
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` while alive; the previous value is restored on drop.
pub struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let previous = read_trimmed(BPF_STATS)?;
        std::fs::write(BPF_STATS, "1").context("enable kernel.bpf_stats_enabled")?;
        Ok(Self { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS, &self.previous) {
            eprintln!(
                "bench: WARNING: could not restore {BPF_STATS} to {}: {e}",
                self.previous
            );
        }
    }
}

/// A child process killed (SIGTERM, then SIGKILL after 3 s) and reaped on drop.
pub struct ChildGuard {
    pub child: Child,
    pub what: String,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: signals our own child, which is not reaped yet (pid not reused).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("bench: {} did not stop on SIGTERM: killing it", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system, all threads) of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("read /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|t| t as f64 / clock_ticks())
        .with_context(|| format!("unexpected /proc/{pid}/stat: {stat}"))
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident set size of a process, in MiB.
pub fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss_kib(&status)
        .map(|k| k as f64 / 1024.0)
        .context("no VmRSS in /proc/PID/status")
}

pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time of the waited-for children of this process (getrusage), in seconds.
pub fn children_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_CHILDREN)
}

/// CPU time of this process, all its threads (also ended ones), in seconds.
pub fn self_cpu_seconds() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage struct.
    unsafe {
        libc::getrusage(who, &raw mut ru);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The BPF program ids a process holds (program and link fds, from `/proc/PID/fdinfo`).
pub fn prog_ids_of(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for e in dir.flatten() {
        if let Ok(text) = std::fs::read_to_string(e.path()) {
            ids.extend(text.lines().filter_map(|l| {
                l.strip_prefix("prog_id:")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            }));
        }
    }
    ids
}

/// One program's statistics from `bpftool prog show -j`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgStat {
    pub id: u64,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    /// Runs the kernel skipped (nesting on one CPU); bpftool prints it only when not 0.
    pub recursion_misses: u64,
}

pub fn bpftool_progs() -> Result<Vec<ProgStat>> {
    parse_bpftool(&run("bpftool", &["prog", "show", "-j"])?)
}

pub fn parse_bpftool(json: &str) -> Result<Vec<ProgStat>> {
    let v: serde_json::Value = serde_json::from_str(json).context("bpftool JSON")?;
    let list = v.as_array().context("bpftool: not an array")?;
    Ok(list
        .iter()
        .filter_map(|p| {
            Some(ProgStat {
                id: p.get("id")?.as_u64()?,
                name: p
                    .get("name")
                    .and_then(|n| n.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                run_time_ns: p
                    .get("run_time_ns")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
                run_cnt: p
                    .get("run_cnt")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
                recursion_misses: p
                    .get("recursion_misses")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
            })
        })
        .collect())
}

/// A program attached to a tracepoint through a perf event (`bpftool perf -j`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerfAttach {
    pub pid: u32,
    pub prog_id: u64,
    pub tracepoint: String,
}

pub fn perf_attachments() -> Result<Vec<PerfAttach>> {
    parse_bpftool_perf(&run("bpftool", &["perf", "-j"])?)
}

pub fn parse_bpftool_perf(json: &str) -> Result<Vec<PerfAttach>> {
    let v: serde_json::Value = serde_json::from_str(json).context("bpftool perf JSON")?;
    let list = v.as_array().context("bpftool perf: not an array")?;
    Ok(list
        .iter()
        .filter_map(|p| {
            Some(PerfAttach {
                pid: u32::try_from(p.get("pid")?.as_u64()?).ok()?,
                prog_id: p.get("prog_id")?.as_u64()?,
                tracepoint: p.get("tracepoint")?.as_str()?.to_owned(),
            })
        })
        .collect())
}

/// HTTP GET on 127.0.0.1 (the testkit's ureq client): (status, body, time to the last byte).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String, Duration)> {
    let t0 = Instant::now();
    let (status, body) = tcpwatch_testkit::http::get(port, path)?;
    Ok((status, body, t0.elapsed()))
}

pub use tcpwatch_testkit::metrics::sample as metric;
pub use tcpwatch_testkit::try_free_port as free_port;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (tcp watch) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(
            parse_rss_kib("Name:\tx\nVmRSS:\t   20480 kB\nThreads: 3\n"),
            Some(20480)
        );
    }

    #[test]
    fn parses_bpftool() {
        let j = r#"[{"id":7,"name":"tp_inet_sock_se","run_time_ns":900,"run_cnt":9,
                     "recursion_misses":2},
                    {"id":8,"name":"x"},{"name":"noid"}]"#;
        let p = parse_bpftool(j).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].id, p[0].run_cnt, p[0].run_time_ns), (7, 9, 900));
        assert_eq!((p[0].recursion_misses, p[1].recursion_misses), (2, 0));
        assert_eq!(p[1].run_cnt, 0);
        let perf = r#"[{"pid":5376,"fd":9,"prog_id":14920,"fd_type":"tracepoint",
                        "tracepoint":"inet_sock_set_state"},
                       {"pid":1,"fd":3,"prog_id":2,"fd_type":"uprobe","filename":"/x"}]"#;
        assert_eq!(
            parse_bpftool_perf(perf).unwrap(),
            vec![PerfAttach {
                pid: 5376,
                prog_id: 14920,
                tracepoint: "inet_sock_set_state".into()
            }]
        );
    }
}
