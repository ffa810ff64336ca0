//! tcpwatch-vmtest: the scenario runner of `cargo xtask vm-test`.
//!
//! - As PID 1 of a test VM (the initramfs' `/init`): mounts devtmpfs, proc, sysfs, bpffs, tracefs,
//!   loads the kernel modules listed in `/etc/vmtest-modules`, brings up `lo`, runs the
//!   scenarios with `/bin/tcpwatch`, then powers the VM off.
//! - On the host (`tcpwatch-vmtest --host --tcpwatch <binary>`): enters a network namespace of
//!   its own (`unshare(CLONE_NEWNET)`), brings up `lo` and runs the same scenarios.
//!
//! Every scenario prints one machine-readable line,
//! `VMTEST <scenario> PASS|FAIL|SKIP <detail>`, and the run ends with
//! `VMTEST-DONE pass=N fail=M skip=K`. Ground truth comes from the sockets themselves
//! (`SIOCINQ`/`SIOCOUTQ`, accept/close sequences) since the VM has no `ss`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd as _, RawFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;
use tcpwatch_testkit::find_program;
use tcpwatch_testkit::netns::{fill_send_buffer, listen_on};
use tcpwatch_testkit::snapshot::find;

mod fallbacks;
mod setup;
use setup::{host_setup, power_off, vm_setup};

/// The tcpwatch binary inside the VM.
const VM_TCPWATCH: &str = "/bin/tcpwatch";
/// The message of the refusal path (`--pretend-no-iter`), see docs/kernels.md.
const REFUSAL_TEXT: &str = "Minimum kernel: 5.10";

enum Outcome {
    Pass(String),
    Skip(String),
}

struct Ctx {
    tcpwatch: PathBuf,
    /// Inode of the network namespace the scenarios run in.
    netns_inode: u64,
    /// `nft` to blackhole a port with, if there is one.
    nft: Option<PathBuf>,
}

fn main() -> ExitCode {
    let in_vm = std::process::id() == 1;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if in_vm {
        vm_setup();
    } else if let Err(e) = host_setup(&args) {
        println!("VMTEST-ERROR {}", one_line(&format!("{e:#}")));
        return ExitCode::FAILURE;
    }
    let tcpwatch = if in_vm {
        PathBuf::from(VM_TCPWATCH)
    } else {
        let Some(p) = args
            .iter()
            .position(|a| a == "--tcpwatch")
            .and_then(|i| args.get(i + 1))
        else {
            println!("VMTEST-ERROR usage: tcpwatch-vmtest --host --tcpwatch <binary>");
            return ExitCode::FAILURE;
        };
        PathBuf::from(p)
    };
    let netns_inode = std::fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino());
    let nft = find_program("nft");
    let ctx = Ctx {
        tcpwatch,
        netns_inode,
        nft,
    };
    println!("VMTEST-INFO kernel {}", kernel_release());
    let failed = run_all(&ctx);
    if in_vm {
        power_off();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs every scenario; true if one failed.
fn run_all(ctx: &Ctx) -> bool {
    type Scenario = fn(&Ctx) -> Result<Outcome>;
    let scenarios: &[(&str, Scenario)] = &[
        ("refusal_no_iter", refusal_no_iter),
        ("state_tracking", state_tracking),
        ("close_wait_owned", close_wait_owned),
        (
            "accept_queue_and_unaccepted_close_wait",
            accept_queue_and_unaccepted_close_wait,
        ),
        ("send_q_peer_never_reads", send_q_peer_never_reads),
        ("blackholed_peer", blackholed_peer),
        ("fallbacks_reported", fallbacks::fallbacks_reported),
    ];
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    for (name, f) in scenarios {
        let t0 = Instant::now();
        let (word, detail) = match f(ctx) {
            Ok(Outcome::Pass(d)) => {
                pass += 1;
                ("PASS", d)
            }
            Ok(Outcome::Skip(d)) => {
                skip += 1;
                ("SKIP", d)
            }
            Err(e) => {
                fail += 1;
                ("FAIL", format!("{e:#}"))
            }
        };
        let took = t0.elapsed().as_secs_f64();
        println!("VMTEST {name} {word} {} ({took:.1} s)", one_line(&detail));
        let _ = std::io::stdout().flush();
    }
    println!("VMTEST-DONE pass={pass} fail={fail} skip={skip}");
    let _ = std::io::stdout().flush();
    fail > 0
}

fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.len() > 600 {
        let mut cut = 600;
        while !joined.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &joined[..cut])
    } else {
        joined
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// A kernel lacking a required feature (simulated) gets the documented message and exit 1.
fn refusal_no_iter(ctx: &Ctx) -> Result<Outcome> {
    let out = Command::new(&ctx.tcpwatch)
        .args(["--pretend-no-iter", "snapshot"])
        .env("TCPWATCH_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {}", ctx.tcpwatch.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "exit status {} (want 1); stderr: {stderr}",
        out.status
    );
    ensure!(
        stderr.contains(REFUSAL_TEXT),
        "stderr lacks `{REFUSAL_TEXT}`: {stderr}"
    );
    ensure!(
        stderr.contains("iter/tcp"),
        "stderr does not name iter/tcp: {stderr}"
    );
    Ok(Outcome::Pass(format!(
        "exit 1, message names iter/tcp and `{REFUSAL_TEXT}`"
    )))
}

/// A connection appears in `snapshot --json` with the right states on both sides.
fn state_tracking(ctx: &Ctx) -> Result<Outcome> {
    let (l, addr) = listener(16)?;
    let client = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    let (server, _) = l.accept()?;
    let caddr = client.local_addr()?;
    let conns = ctx.conns()?;
    find(&conns, "LISTEN", &addr, None).context("listener not reported as LISTEN")?;
    find(&conns, "ESTABLISHED", &caddr, Some(&addr))
        .context("client side not reported as ESTABLISHED")?;
    find(&conns, "ESTABLISHED", &addr, Some(&caddr))
        .context("server side not reported as ESTABLISHED")?;
    // The client shuts its side down (keeping the socket, else the orphan becomes a
    // timewait minisocket): the client goes to FIN_WAIT2, the server to CLOSE_WAIT.
    client.shutdown(std::net::Shutdown::Write)?;
    std::thread::sleep(Duration::from_millis(200));
    let conns = ctx.conns()?;
    find(&conns, "CLOSE_WAIT", &addr, Some(&caddr)).context("server not CLOSE_WAIT")?;
    find(&conns, "FIN_WAIT2", &caddr, Some(&addr)).context("client not FIN_WAIT2")?;
    drop((client, server));
    Ok(Outcome::Pass(format!(
        "LISTEN {addr}, ESTABLISHED both ways, then CLOSE_WAIT/FIN_WAIT2 ({} sockets in ns)",
        conns.len()
    )))
}

/// `CLOSE_WAIT` of an accepted socket: owner is this process and its fd; the unread FIN
/// counts 1 in Recv-Q.
fn close_wait_owned(ctx: &Ctx) -> Result<Outcome> {
    let (l, addr) = listener(16)?;
    let client = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    let (server, peer) = l.accept()?;
    drop(client);
    std::thread::sleep(Duration::from_millis(200));
    let inq = sock_ioctl(server.as_raw_fd(), libc::FIONREAD)?;
    let conns = ctx.conns()?;
    let cw = find(&conns, "CLOSE_WAIT", &addr, Some(&peer)).context("CLOSE_WAIT not reported")?;
    let pid = num(&cw["owner"]["pid"]).with_context(|| format!("no owner pid: {cw}"))?;
    ensure!(
        pid == u64::from(std::process::id()),
        "owner pid {pid}, want ours: {cw}"
    );
    let fd = cw["owner"]["fd"]
        .as_i64()
        .with_context(|| format!("no owner fd: {cw}"))?;
    ensure!(
        fd == i64::from(server.as_raw_fd()),
        "owner fd {fd}, want {}",
        server.as_raw_fd()
    );
    ensure!(
        num(&cw["inode"]).is_some_and(|i| i != 0),
        "no socket inode: {cw}"
    );
    let recv_q = num(&cw["queues"]["recv_q"]).with_context(|| format!("no recv_q: {cw}"))?;
    ensure!(
        recv_q == 1,
        "recv_q {recv_q}, want 1 (the unread FIN; SIOCINQ says {inq})"
    );
    drop(server);
    Ok(Outcome::Pass(format!(
        "owner pid {pid} fd {fd}, recv_q 1 (unread FIN)"
    )))
}

/// A listener with backlog 2 that never accepts holds 3 connections (queue/limit 3/2); a
/// client that gives up leaves an unaccepted `CLOSE_WAIT` without socket inode or owner.
fn accept_queue_and_unaccepted_close_wait(ctx: &Ctx) -> Result<Outcome> {
    let (_l, addr) = listener(2)?;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(TcpStream::connect_timeout(&addr, Duration::from_secs(5))?);
    }
    let gone = clients.pop().context("three clients")?;
    let gone_addr = gone.local_addr()?;
    drop(gone);
    std::thread::sleep(Duration::from_millis(300));
    let conns = ctx.conns()?;
    let l = find(&conns, "LISTEN", &addr, None).context("listener not reported")?;
    let queue = num(&l["queues"]["accept_queue"]).with_context(|| format!("no queue: {l}"))?;
    let limit = num(&l["queues"]["accept_limit"]).with_context(|| format!("no limit: {l}"))?;
    ensure!(
        (queue, limit) == (3, 2),
        "accept queue/limit {queue}/{limit}, want 3/2"
    );
    let cw = find(&conns, "CLOSE_WAIT", &addr, Some(&gone_addr))
        .context("unaccepted CLOSE_WAIT not reported")?;
    ensure!(
        num(&cw["inode"]) == Some(0),
        "never accepted: want inode 0: {cw}"
    );
    ensure!(
        cw.get("owner").is_none_or(Value::is_null),
        "unaccepted socket has an owner: {cw}"
    );
    drop(clients);
    Ok(Outcome::Pass(
        "accept queue 3/2 (limit+1), unaccepted CLOSE_WAIT: inode 0, no owner".into(),
    ))
}

/// A peer that never reads: Send-Q of the writer and Recv-Q of the reader match the kernel's
/// SIOCOUTQ/SIOCINQ once the queues settle.
fn send_q_peer_never_reads(ctx: &Ctx) -> Result<Outcome> {
    let (l, addr) = listener(16)?;
    let mut client = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    let (server, _) = l.accept()?;
    let written = fill_send_buffer(&mut client).context("write")?;
    ensure!(written > 0, "could not write");
    let queues = || -> Result<(u64, u64)> {
        Ok((
            sock_ioctl(client.as_raw_fd(), libc::TIOCOUTQ)?,
            sock_ioctl(server.as_raw_fd(), libc::FIONREAD)?,
        ))
    };
    let t0 = Instant::now();
    let (send_q, recv_q) = loop {
        let a = queues()?;
        std::thread::sleep(Duration::from_millis(300));
        let b = queues()?;
        if a == b {
            break b;
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "queues never settled: {a:?} {b:?}"
        );
    };
    ensure!(
        send_q > 0 && recv_q > 0,
        "ground truth Send-Q {send_q} Recv-Q {recv_q}"
    );
    let caddr = client.local_addr()?;
    let conns = ctx.conns()?;
    let c = find(&conns, "ESTABLISHED", &caddr, Some(&addr)).context("client not reported")?;
    let s = find(&conns, "ESTABLISHED", &addr, Some(&caddr)).context("server not reported")?;
    let q = &c["queues"];
    let got_send = num(&q["send_q"]).with_context(|| format!("no send_q: {c}"))?;
    let got_recv = num(&s["queues"]["recv_q"]).with_context(|| format!("no recv_q: {s}"))?;
    ensure!(
        got_send == send_q,
        "client send_q {got_send}, SIOCOUTQ {send_q}"
    );
    ensure!(
        got_recv == recv_q,
        "server recv_q {got_recv}, SIOCINQ {recv_q}"
    );
    let (unacked, unsent) = (num(&q["unacked"]), num(&q["unsent"]));
    ensure!(
        unacked.zip(unsent).is_some_and(|(a, b)| a + b == got_send),
        "send_q {got_send} != unacked {unacked:?} + unsent {unsent:?}"
    );
    drop(server);
    Ok(Outcome::Pass(format!(
        "wrote {written} B: Send-Q {got_send} = SIOCOUTQ, peer Recv-Q {got_recv} = SIOCINQ"
    )))
}

/// A peer behind an nftables drop rule: Send-Q stays at what was written, the RTO backoff
/// grows. Needs `nft` (and `nf_tables`); skipped without it.
fn blackholed_peer(ctx: &Ctx) -> Result<Outcome> {
    let Some(nft) = &ctx.nft else {
        return Ok(Outcome::Skip("no nft binary here".into()));
    };
    let (l, addr) = listener(16)?;
    let mut client = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    let (_server, _) = l.accept()?;
    let port = addr.port();
    let table = format!("vmtest{}", std::process::id());
    let rules = format!(
        "add table inet {table}\n\
         add chain inet {table} in {{ type filter hook input priority 0; }}\n\
         add rule inet {table} in tcp dport {port} drop\n\
         add rule inet {table} in tcp sport {port} drop\n"
    );
    nft_run(nft, &rules).context("installing the drop rule")?;
    let result = blackholed_checks(ctx, &mut client, addr);
    let _ = nft_run(nft, &format!("delete table inet {table}\n"));
    result
}

fn blackholed_checks(ctx: &Ctx, client: &mut TcpStream, addr: SocketAddr) -> Result<Outcome> {
    client.write_all(&[1_u8; 1000])?;
    let caddr = client.local_addr()?;
    let t0 = Instant::now();
    let mut seen = Vec::new();
    loop {
        let conns = ctx.conns()?;
        let c = find(&conns, "ESTABLISHED", &caddr, Some(&addr)).context("client not reported")?;
        let backoff = num(&c["tcp"]["backoff"]).with_context(|| format!("no backoff: {c}"))?;
        let send_q = num(&c["queues"]["send_q"]).with_context(|| format!("no send_q: {c}"))?;
        ensure!(
            send_q == 1000,
            "send_q {send_q}, want 1000 (nothing acknowledged)"
        );
        seen.push(backoff);
        if backoff >= 2 && seen.first().is_some_and(|&b| b < backoff) {
            let total = num(&c["retrans"]["total"]).unwrap_or(0);
            return Ok(Outcome::Pass(format!(
                "send_q 1000 held, backoff {seen:?}, kernel retransmit total {total}"
            )));
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("backoff did not grow in 30 s: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn nft_run(nft: &Path, rules: &str) -> Result<()> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", nft.display()))?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(rules.as_bytes())?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait()?;
    ensure!(status.success(), "nft failed ({status}): {err}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

impl Ctx {
    /// One `tcpwatch snapshot --json`, restricted to this runner's network namespace.
    fn conns(&self) -> Result<Vec<Value>> {
        let out = Command::new(&self.tcpwatch)
            .args(["snapshot", "--json"])
            .env("TCPWATCH_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start {}", self.tcpwatch.display()))?;
        if !out.status.success() {
            // The verifier's last words (a whole log is thousands of lines on a serial port).
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            let from = lines.len().saturating_sub(40);
            for l in lines.iter().take(1).chain(lines.iter().skip(from.max(1))) {
                println!("VMTEST-LOG tcpwatch: {l}");
            }
            bail!(
                "tcpwatch snapshot failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout).context("snapshot JSON")?;
        let list = v
            .get("connections")
            .and_then(Value::as_array)
            .context("no connections")?;
        Ok(list
            .iter()
            .filter(|c| num(&c["netns"]["inode"]) == Some(self.netns_inode))
            .cloned()
            .collect())
    }
}

fn num(v: &Value) -> Option<u64> {
    v.as_u64()
}

/// An IPv4 loopback listener with an explicit backlog (std always uses 128).
fn listener(backlog: i32) -> Result<(TcpListener, SocketAddr)> {
    let (s, addr) = listen_on(SocketAddr::from(([127, 0, 0, 1], 0)), backlog, false)?;
    Ok((s.into(), addr))
}

/// `ioctl(fd, req, &int)` for SIOCINQ (FIONREAD) / SIOCOUTQ (TIOCOUTQ).
fn sock_ioctl(fd: RawFd, req: libc::Ioctl) -> Result<u64> {
    let mut v: libc::c_int = 0;
    // SAFETY: both requests write one int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fd, req, &raw mut v) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("socket queue ioctl");
    }
    u64::try_from(v).context("negative queue length")
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_collapses_and_truncates() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
        let long = "é".repeat(400);
        let s = one_line(&long);
        assert!(s.ends_with("...") && s.len() <= 604);
    }
}
