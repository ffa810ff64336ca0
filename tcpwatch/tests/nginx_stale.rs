//! Privileged end-to-end test of incident 5: real Debian nginx with upstream `keepalive` in
//! front of a backend that closes idle connections after 1 s. nginx reuses a connection the
//! backend has closed, the backend's closed socket answers with an RST and nginx returns 502
//! for the POST. `stale_connection_reuse` must name nginx's worker, the backend port and the
//! count within 10 s of the first 502.
//!
//! Timing: on loopback the backend's FIN reaches nginx within microseconds, and nginx drops a
//! cached upstream connection as soon as it becomes readable, so the race of production (a
//! request crossing the FIN on the wire) is made deterministic by holding the FIN back: an
//! nftables rule in the test's namespace drops the backend's FIN segments.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Daemon, Netns, privileged, wait_for};

/// An HTTP/1.1 keep-alive backend that closes a connection idle for `idle`.
fn backend(ns: &Netns, idle: Duration, stop: Arc<AtomicBool>) -> SocketAddr {
    let l: TcpListener = ns.enter(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, _)) => {
                    std::thread::spawn(move || serve(s, idle));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    });
    addr
}

fn serve(mut s: TcpStream, idle: Duration) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(idle)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        // One request: headers, then Content-Length bytes of body.
        let (head_end, body_len) = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                break (i + 4, len);
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return, // peer closed, or idle timeout: close
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_end + body_len {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + body_len);
        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

struct Nginx {
    child: Child,
    dir: String,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx(ns: &Netns, upstream: SocketAddr) -> Nginx {
    let dir = format!("/tmp/{}-nginx", ns.name);
    std::fs::create_dir_all(&dir).unwrap();
    let port = support::free_port();
    let conf = format!(
        "worker_processes 1;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
           access_log {dir}/access.log;\n\
           client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;\n\
           fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n\
           upstream backend {{ server {upstream}; keepalive 4; keepalive_timeout 60s; }}\n\
           server {{\n\
             listen 127.0.0.1:{port};\n\
             location / {{ proxy_pass http://backend; proxy_http_version 1.1;\n\
                          proxy_set_header Connection \"\"; }}\n\
           }}\n\
         }}\n"
    );
    std::fs::write(format!("{dir}/nginx.conf"), conf).unwrap();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "nginx",
            "-g",
            "daemon off;",
            "-p",
            &dir,
        ])
        .args(["-c", &format!("{dir}/nginx.conf")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let n = Nginx { child, dir, port };
    let up = wait_for(Duration::from_secs(10), || {
        ns.enter(move || TcpStream::connect(("127.0.0.1", port)).ok())
            .map(|_| ())
    });
    assert!(up.is_some(), "nginx did not start (see its stderr)");
    n
}

/// One POST through nginx on a new client connection; returns the status.
fn post(ns: &Netns, port: u16) -> u16 {
    ns.enter(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(
            b"POST /order HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.split_whitespace().nth(1).unwrap().parse().unwrap()
    })
}

/// nginx's worker processes (children of the master).
fn workers(master: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1.to_owned();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(master)
        })
        .collect()
}

fn stale_finding(d: &Daemon, remote: SocketAddr) -> Option<Value> {
    d.open_finding_to("stale_connection_reuse", &remote)
}

#[test]
fn nginx_502s_from_reused_upstream_connections_are_named() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("nginx");
    let stop = Arc::new(AtomicBool::new(false));
    let up = backend(&ns, Duration::from_secs(1), stop.clone());
    let rules = format!(
        "add table inet twt\n\
         add chain inet twt out {{ type filter hook output priority 0; }}\n\
         add rule inet twt out ip saddr 127.0.0.1 tcp sport {} tcp flags & fin == fin drop\n",
        up.port()
    );
    let file = format!("/tmp/{}.nft", ns.name);
    std::fs::write(&file, rules).unwrap();
    ns.exec("nft", &["-f", &file]);
    let _ = std::fs::remove_file(&file);
    let d = Daemon::start(&["daemon.sweep_interval_ms=500"]);
    let nx = nginx(&ns, up);
    let master: u32 = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("{}/nginx.pid", nx.dir))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .unwrap();

    // Each round: a POST that opens (or reuses) an upstream connection, then a pause longer
    // than the backend's idle timeout, then a POST that nginx sends on the closed connection.
    let mut statuses = Vec::new();
    let mut first_502: Option<Instant> = None;
    for _ in 0..3 {
        statuses.push(post(&ns, nx.port));
        std::thread::sleep(Duration::from_millis(1500));
        let s = post(&ns, nx.port);
        if s == 502 && first_502.is_none() {
            first_502 = Some(Instant::now());
        }
        statuses.push(s);
    }
    // Ground truth: nginx's access log (written right after each response).
    let log = wait_for(Duration::from_secs(5), || {
        let log = std::fs::read_to_string(format!("{}/access.log", nx.dir)).ok()?;
        (log.lines().count() == statuses.len()).then_some(log)
    })
    .expect("one access log line per request");
    let logged_502 = log.lines().filter(|l| l.contains("\" 502 ")).count();
    let n502 = statuses.iter().filter(|&&s| s == 502).count();
    assert_eq!(statuses, vec![200, 502, 200, 502, 200, 502], "{log}");
    assert_eq!(logged_502, n502, "{log}");
    let first_502 = first_502.unwrap();

    let f = wait_for(Duration::from_secs(10), || {
        stale_finding(&d, up).filter(|f| {
            f["evidence"]["stale_requests"].as_f64()
                == Some(f64::from(u32::try_from(n502).unwrap()))
        })
    });
    let waited = first_502.elapsed();
    let f = f.unwrap_or_else(|| {
        panic!(
            "no stale_connection_reuse naming {up} with {n502} requests: {:#}",
            d.get_json("/api/v1/findings")
        )
    });
    assert!(waited <= Duration::from_secs(10), "{waited:?}");
    let pid = u32::try_from(f["subject"]["owner"]["pid"].as_u64().unwrap()).unwrap();
    assert!(
        workers(master).contains(&pid),
        "pid {pid} is not an nginx worker of master {master}: {f:#}"
    );
    assert_eq!(f["subject"]["owner"]["comm"], "nginx");
    let diag = f["diagnosis"].as_str().unwrap();
    assert!(
        diag.starts_with(&format!("nginx[{pid}] wrote {n502} request(s)")),
        "{diag}"
    );
    assert!(diag.contains(&format!("connections to {up}")), "{diag}");
    assert_eq!(f["cause"], "idle_timeout", "{f:#}");
    // The backend's closed sockets aborted on nginx's data (Linux 6.10+ names the reason).
    if std::fs::read_to_string("/sys/kernel/tracing/events/tcp/tcp_send_reset/format")
        .is_ok_and(|f| f.contains("reason"))
    {
        let (_, body) = support::http_get(d.port, "/metrics").unwrap();
        let n: f64 = body
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "tcpwatch_resets_sent_by_reason_total{reason=\"TCP_ABORT_ON_DATA\"}",
                )?
                .trim()
                .parse()
                .ok()
            })
            .unwrap_or(0.0);
        assert!(n >= 3.0, "TCP_ABORT_ON_DATA resets: {n}");
    }
    eprintln!("{diag}");
    stop.store(true, Ordering::Relaxed);
}
