//! Helpers of the IPv6, real-detector and false-positive tests: a veth link between two
//! namespaces, a daemon logging findings to a file, and a reader of the daemon's `/api/v1/stream` that keeps every event for the whole run.
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::{Netns, daemon, http, run};

/// Two namespaces joined by a veth pair with static IPv6 addresses (`nodad`: usable at once)
/// `fd00:7477::1` (a) and `fd00:7477::2` (b), and IPv4 `10.77.0.1` / `10.77.0.2`.
pub struct Link {
    pub a: Netns,
    pub b: Netns,
}

pub const LINK_V6_A: &str = "fd00:7477::1";
pub const LINK_V6_B: &str = "fd00:7477::2";

impl Link {
    pub fn new(tag: &str) -> Self {
        let a = Netns::new(&format!("{tag}a"));
        let b = Netns::new(&format!("{tag}b"));
        // Interface names are per namespace, so fixed names cannot collide.
        run(
            "ip",
            &[
                "-n", &a.name, "link", "add", "tw0", "type", "veth", "peer", "name", "tw1",
                "netns", &b.name,
            ],
        );
        for (ns, addr6, addr4, dev) in [
            (&a, LINK_V6_A, "10.77.0.1/24", "tw0"),
            (&b, LINK_V6_B, "10.77.0.2/24", "tw1"),
        ] {
            run(
                "ip",
                &[
                    "-n",
                    &ns.name,
                    "addr",
                    "add",
                    &format!("{addr6}/64"),
                    "dev",
                    dev,
                    "nodad",
                ],
            );
            run("ip", &["-n", &ns.name, "addr", "add", addr4, "dev", dev]);
            run("ip", &["-n", &ns.name, "link", "set", dev, "up"]);
        }
        Self { a, b }
    }
}

/// Every event of the daemon's `/api/v1/stream`, read by a thread from the moment of
/// `subscribe` until `finish`. Connection-table events (`"type":"conn"`) are only counted
/// (they are many and large); all others are kept.
pub struct StreamLog {
    events: Arc<Mutex<Vec<Value>>>,
    conn_events: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Why the stream ended before `finish`, if it did.
    broken: Arc<Mutex<Option<String>>>,
}

impl StreamLog {
    /// Connects to the stream and returns once the response headers arrived (the
    /// subscription exists: nothing later is missed).
    pub fn subscribe(port: u16) -> Self {
        let (status, body) = http::get_stream(port, "/api/v1/stream").unwrap();
        assert_eq!(status, 200, "stream status");
        let events = Arc::new(Mutex::new(Vec::new()));
        let conn_events = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let broken = Arc::new(Mutex::new(None));
        let (ev, ce, st, br) = (
            events.clone(),
            conn_events.clone(),
            stop.clone(),
            broken.clone(),
        );
        // Detached: it ends when the daemon closes the stream (at the latest when the test
        // drops the daemon); `finish` only reads what it gathered.
        std::thread::spawn(move || {
            if let Err(e) = read_events(BufReader::new(body), (&ev, &ce), &st)
                && !st.load(Ordering::Relaxed)
            {
                *br.lock().unwrap() = Some(e);
            }
        });
        Self {
            events,
            conn_events,
            stop,
            broken,
        }
    }

    /// Connection-table events so far.
    pub fn conn_events(&self) -> u64 {
        self.conn_events.load(Ordering::Relaxed)
    }

    /// The events so far (but `conn` ones).
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Finding changes so far (`{"type":"finding","change":...,"finding":{...}}`).
    pub fn finding_changes(&self, change: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == "finding" && e["change"] == change)
            .collect()
    }

    /// Stops reading; fails if the stream broke or reported lost finding or incident changes
    /// (then the log is incomplete and proves nothing).
    pub fn finish(self) -> Vec<Value> {
        self.stop.store(true, Ordering::Relaxed);
        let events = self.events();
        let broken = self.broken.lock().unwrap().clone();
        assert!(broken.is_none(), "stream reader: {broken:?}");
        // Connection deltas may be dropped under load (`conn_only`); finding and incident
        // changes travel on their own channel, and losing one of those fails the test.
        let lagged: Vec<&Value> = events
            .iter()
            .filter(|e| e["type"] == "lagged" && e["conn_only"] != true)
            .collect();
        assert!(
            lagged.is_empty(),
            "the stream dropped finding or incident changes: {lagged:?}"
        );
        events
    }
}

/// Reads server-sent events (blank-line terminated) until the stream ends or `stop`.
fn read_events(
    mut r: impl BufRead,
    (events, conns): (&Mutex<Vec<Value>>, &AtomicU64),
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut data = String::new();
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return Err("the daemon closed the stream".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading the stream: {e}")),
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if let Some(d) = l.strip_prefix("data:") {
            data.push_str(d.trim_start());
        } else if l.is_empty() && !data.is_empty() {
            if data.starts_with(r#"{"type":"conn""#) {
                conns.fetch_add(1, Ordering::Relaxed);
            } else {
                let v: Value = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("stream event is not JSON ({e}): {data}"));
                events.lock().unwrap().push(v);
            }
            data.clear();
        }
    }
    Ok(())
}

/// A finding's subject `netns.inode`, if any.
pub fn finding_netns(f: &Value) -> Option<u64> {
    f["subject"]["netns"]["inode"].as_u64()
}

/// Sets `SO_LINGER {on, 0}`: `close()` then sends an RST instead of a FIN.
pub fn linger_zero(s: &impl std::os::fd::AsRawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd and a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const l).cast(),
            u32::try_from(std::mem::size_of::<libc::linger>()).unwrap(),
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// A daemon (default settings plus `extra`) whose log goes to `log` as JSON lines, with every
/// finding lifecycle change (`tcpwatch::finding`, logged at debug) and warnings. Unlike the stream,
/// the log is written for every change and drops nothing.
pub fn daemon_logging_to(extra: &[&str], log: &std::path::Path) -> super::Daemon {
    let file = std::fs::File::create(log).unwrap();
    let mut sets = vec!["daemon.log_format=\"json\"".to_owned()];
    sets.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut d = daemon::Daemon::spawn(
        std::path::Path::new(super::BIN),
        daemon::pin_dir("log"),
        super::free_port(),
        sets,
        |cmd| {
            cmd.env("TCPWATCH_LOG", "warn,tcpwatch::finding=debug")
                .stderr(file);
        },
    );
    d.wait_api_ready();
    super::Daemon::from_kit(d)
}

/// The finding lifecycle lines of a JSON daemon log (`change`, `kind`, `cause`, `id`,
/// `message` = the diagnosis, which names the namespace inode).
pub fn finding_log(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "tcpwatch::finding")
        .collect()
}
