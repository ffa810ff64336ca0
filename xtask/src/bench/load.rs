//! Load generators, all inside a bench namespace and bounded in time: connection churn
//! (optionally rate-limited), one bulk transfer, and pools of idle established connections.

use std::io::{BufRead as _, BufReader, ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};

use super::sys::{self, ChildGuard, enter_netns};

const IO_TIMEOUT: Duration = Duration::from_secs(2);
const REQ: &[u8; 16] = b"GET /tcpwatch!\r\n";

/// Connection churn: `clients` threads each connect, send 16 bytes, read 16 bytes back and
/// close; every `abort_every`-th connection is closed with `SO_LINGER` 0 (a reset), so the
/// reset programs run too.
#[derive(Clone, Debug)]
pub struct ChurnOpts {
    pub clients: usize,
    pub duration: Duration,
    /// Total connections per second to aim at; None: as fast as possible.
    pub rate: Option<f64>,
    pub abort_every: u64,
    /// Stop after this many successful connections (a fixed amount of work; `duration` stays
    /// the upper bound).
    pub max_conns: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
pub struct ChurnResult {
    pub conns: u64,
    pub errors: u64,
    pub elapsed: Duration,
}

impl ChurnResult {
    pub fn per_second(&self) -> f64 {
        self.conns as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> JoinHandle<Result<T>> {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns)?;
        f()
    })
}

fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    h.join().map_err(|_| anyhow!("load thread panicked"))?
}

fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket fd and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::linger>()).unwrap_or(8),
        );
    }
}

/// Waits up to 100 ms for the listener to become readable.
fn poll_readable(l: &TcpListener) -> bool {
    let mut pfd = libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut pfd, 1, 100) > 0 }
}

fn serve_one(mut s: TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
    let _ = s.set_nodelay(true);
    let mut req = [0u8; 16];
    if s.read_exact(&mut req).is_err() || s.write_all(&req).is_err() {
        return;
    }
    let mut rest = [0u8; 64];
    while matches!(s.read(&mut rest), Ok(n) if n > 0) {}
}

fn client_once(addr: SocketAddr, abort: bool) -> Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    s.write_all(REQ)?;
    let mut resp = [0u8; 16];
    s.read_exact(&mut resp)?;
    if abort {
        set_linger_zero(&s);
    }
    Ok(())
}

pub fn churn(ns: &str, o: &ChurnOpts) -> Result<ChurnResult> {
    let listener = join(spawn_in(ns, || Ok(TcpListener::bind("127.0.0.1:0")?)))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let listener = Arc::new(listener);
    let done = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = (0..o.clients)
        .map(|_| {
            let l = Arc::clone(&listener);
            let done = Arc::clone(&done);
            spawn_in(ns, move || {
                while !done.load(Ordering::Relaxed) {
                    if !poll_readable(&l) {
                        continue;
                    }
                    match l.accept() {
                        Ok((s, _)) => serve_one(s),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
                Ok(())
            })
        })
        .collect();
    let conns = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + o.duration;
    let per_client = o
        .rate
        .map(|r| Duration::from_secs_f64(o.clients as f64 / r.max(1.0)));
    let clients: Vec<_> = (0..o.clients)
        .map(|i| {
            let (conns, errors) = (Arc::clone(&conns), Arc::clone(&errors));
            let abort_every = o.abort_every.max(1);
            let max = o.max_conns.unwrap_or(u64::MAX);
            spawn_in(ns, move || {
                let mut n: u64 = i as u64;
                let mut next = Instant::now();
                while Instant::now() < deadline
                    && !sys::stopped()
                    && conns.load(Ordering::Relaxed) < max
                {
                    if let Some(gap) = per_client {
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else if now - next > Duration::from_millis(100) {
                            next = now; // fell behind: no burst to catch up
                        }
                        next += gap;
                    }
                    n += 1;
                    if client_once(addr, n.is_multiple_of(abort_every)).is_ok() {
                        conns.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Ok(())
            })
        })
        .collect();
    let mut result = Ok(());
    for c in clients {
        result = result.and(join(c));
    }
    let elapsed = t0.elapsed();
    done.store(true, Ordering::Relaxed);
    for s in servers {
        result = result.and(join(s));
    }
    result?;
    Ok(ChurnResult {
        conns: conns.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
    })
}

#[derive(Clone, Copy, Debug)]
pub struct BulkResult {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl BulkResult {
    pub fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / 1_048_576.0 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One connection to `port` in the namespace: the sender writes 64 KiB chunks for `duration`,
/// the receiver drains; the rate is what the receiver got.
pub fn bulk(ns: &str, port: u16, duration: Duration) -> Result<BulkResult> {
    bulk_limited(ns, port, duration, u64::MAX)
}

/// [`bulk`] that stops after `max_bytes` (rounded up to whole 64 KiB chunks) or `duration`,
/// whichever comes first: a fixed amount of work.
pub fn bulk_limited(ns: &str, port: u16, duration: Duration, max_bytes: u64) -> Result<BulkResult> {
    let listener = join(spawn_in(ns, move || {
        Ok(TcpListener::bind(("127.0.0.1", port))?)
    }))?;
    let addr = listener.local_addr()?;
    let receiver = spawn_in(ns, move || {
        // Bounded: if the sender never connects, the receiver gives up instead of waiting in
        // accept() forever (which hung the whole bench once).
        listener.set_nonblocking(true)?;
        let accept_by = Instant::now() + IO_TIMEOUT + Duration::from_secs(5);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < accept_by => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e).context("bulk receiver: no connection from the sender"),
            }
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = vec![0u8; 256 * 1024];
        let t0 = Instant::now();
        let mut bytes = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => bytes += n as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("bulk receiver"),
            }
        }
        Ok(BulkResult {
            bytes,
            elapsed: t0.elapsed(),
        })
    });
    let sender = spawn_in(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        let chunk = vec![0x5au8; 64 * 1024];
        let deadline = Instant::now() + duration;
        let mut sent = 0u64;
        while Instant::now() < deadline && !sys::stopped() && sent < max_bytes {
            s.write_all(&chunk).context("bulk sender")?;
            sent += chunk.len() as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(())
    });
    let sent = join(sender);
    let got = join(receiver)?;
    sent?;
    Ok(got)
}

/// Sockets one pool helper process holds: under this machine kind's fd hard limit (20000),
/// which root cannot raise without `CAP_SYS_RESOURCE`.
const PER_HELPER: usize = 18_000;

/// Idle established loopback connections (both ends open), held by helper processes
/// (`xtask bench --pool-helper NETNS:SOCKETS`) so that no process needs more than
/// [`PER_HELPER`] descriptors. A helper exits when its stdin closes: dropping the pool (or the
/// bench dying) releases every socket.
#[derive(Default)]
pub struct Pool {
    helpers: Vec<(ChildGuard, ChildStdin)>,
    sockets: usize,
}

impl Pool {
    pub fn sockets(&self) -> usize {
        self.sockets
    }

    /// Adds established pairs until the pool holds at least `sockets` sockets.
    pub fn grow(&mut self, ns: &str, sockets: usize) -> Result<()> {
        let exe = std::env::current_exe().context("path of the xtask binary")?;
        while self.sockets < sockets {
            sys::check_stop()?;
            let n = (sockets - self.sockets).min(PER_HELPER);
            let mut child = Command::new(&exe)
                .args(["bench", "--pool-helper", &format!("{ns}:{n}")])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .context("start a pool helper")?;
            let stdin = child.stdin.take().context("helper stdin")?;
            let stdout = child.stdout.take().context("helper stdout")?;
            let guard = ChildGuard {
                child,
                what: "pool helper".into(),
            };
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            let made: usize = line
                .strip_prefix("READY ")
                .and_then(|v| v.trim().parse().ok())
                .with_context(|| format!("pool helper failed (said {line:?})"))?;
            self.helpers.push((guard, stdin));
            self.sockets += made;
        }
        Ok(())
    }
}

/// The helper process: makes `NETNS:SOCKETS` sockets as pairs, says `READY n`, holds them
/// until stdin closes.
pub fn pool_helper(spec: &str) -> Result<()> {
    let (ns, n) = spec
        .rsplit_once(':')
        .context("expected NETNS_PATH:SOCKETS")?;
    let n: usize = n.parse().context("socket count")?;
    sys::raise_nofile(u64::try_from(n + 100)?)?;
    enter_netns(ns)?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut conns = Vec::with_capacity(n + 1);
    for i in 0..n.div_ceil(2) {
        let c = TcpStream::connect(addr).with_context(|| format!("pool connect #{i}"))?;
        let (s, _) = listener.accept().context("pool accept")?;
        conns.push(c);
        conns.push(s);
    }
    println!("READY {}", conns.len());
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}

/// A connection whose server end enters `CLOSE_WAIT` now: (server end kept open, its local
/// port, when the client closed).
pub fn close_wait(ns: &str) -> Result<(TcpStream, TcpListener, Instant)> {
    join(spawn_in(ns, || {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let c = TcpStream::connect(listener.local_addr()?)?;
        let (s, _) = listener.accept()?;
        drop(c);
        Ok((s, listener, Instant::now()))
    }))
}
