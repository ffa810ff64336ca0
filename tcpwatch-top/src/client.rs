//! Talking to the daemon: whole-body GETs and a Server-Sent Events reader over ureq (the
//! daemon's HTTP client too), the stream read incrementally from the response body.
use std::io::{BufRead, BufReader, Read as _};
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::OnceLock;
use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::state::parse_event;
use crate::state::wire::{ConnectionsBody, FindingsBody, IncidentsBody, Snapshot, StreamEvent};
use anyhow::{Context as _, anyhow, bail};
use tcpwatch_core::incident::Incident;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest silence of one read of a response (a snapshot of 100k connections takes the
/// daemon a while to serialize).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The daemon sends an SSE keep-alive comment every 15 s: silence longer than this is a drop.
const STREAM_IDLE: Duration = Duration::from_secs(45);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the follower thread tells the UI.
#[derive(Debug)]
pub enum ClientMsg {
    Snapshot(Snapshot),
    Event(StreamEvent),
    /// A stream event that did not parse (the error), counted and shown by the UI.
    BadEvent(String),
    Status(String),
    /// A fresh exposure audit (polled: it is not on the stream).
    Exposure(Box<tcpwatch_core::api::ExposureBody>),
    /// The host's `TIME_WAIT` sockets (`/api/v1/status` `time_wait.total`): counted by the
    /// daemon's sweep, not listed as connections.
    TimeWait(u64),
}

/// The error shown when nothing answers at `addr`.
#[must_use]
pub fn no_daemon_message(addr: &str) -> String {
    format!(
        "no tcpwatch daemon at {addr} (start one with `cargo xtask run`, or use \
         `tcpwatch top --standalone` as root)"
    )
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("bad daemon address `{addr}`"))?
        .next()
        .ok_or_else(|| anyhow!("daemon address `{addr}` resolves to nothing"))
}

/// A ureq agent for the daemon on loopback: no proxy, every status returned as an answer,
/// `read_timeout` as the longest silence of one read.
fn agent(read_timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(read_timeout))
        .timeout_per_write(Some(READ_TIMEOUT))
        .user_agent(concat!("tcpwatch-top/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The agent of the whole-body GETs (kept: its connections are reused between them).
fn get_agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| agent(READ_TIMEOUT))
}

/// Whether a request error means nothing answers at the address.
fn is_unreachable(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionRefused | K::AddrNotAvailable | K::NetworkUnreachable | K::HostUnreachable
        ),
        ureq::Error::ConnectionFailed
        | ureq::Error::HostNotFound
        | ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => true,
        _ => false,
    }
}

/// `GET path` on the daemon: the answer, whatever its status.
fn request(
    agent: &ureq::Agent,
    addr: &str,
    path: &str,
    accept: &str,
) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
    resolve(addr)?;
    agent
        .get(&format!("http://{addr}{path}"))
        .header("accept", accept)
        .call()
        .map_err(|e| {
            if is_unreachable(&e) {
                anyhow!("{} ({e})", no_daemon_message(addr))
            } else {
                anyhow!("GET {path}: {e}")
            }
        })
}

/// `GET path`, whole body. Non-200 answers are errors carrying the body.
pub fn get(addr: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let (status, body) = get_any(addr, path)?;
    if status != 200 {
        bail!(
            "GET {path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(body)
}

/// `GET path`: the status and the whole body (no size limit: 100 000 connections are tens of
/// megabytes), whatever the status.
pub fn get_any(addr: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut resp = request(get_agent(), addr, path, "application/json")?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .with_context(|| format!("GET {path}: reading the body"))?;
    Ok((status, body))
}

/// The whole state: every connection (up to 100 000), the open findings and the open
/// incidents (`None` when an older daemon answers 404 to `/api/v1/incidents`).
pub fn load(addr: &str) -> anyhow::Result<Snapshot> {
    let c: ConnectionsBody =
        serde_json::from_slice(&get(addr, "/api/v1/connections?limit=100000")?)
            .context("parsing /api/v1/connections")?;
    let f: FindingsBody = serde_json::from_slice(&get(addr, "/api/v1/findings")?)
        .context("parsing /api/v1/findings")?;
    let incidents = parse_incidents(get_any(addr, "/api/v1/incidents")?)?;
    let exposure = parse_exposure(get_any(addr, "/api/v1/exposure")?)?;
    Ok(Snapshot {
        conns: c.connections,
        findings: f.open,
        incidents,
        exposure,
    })
}

/// The answer to `GET /api/v1/exposure`: `None` for a 404 (a daemon from before the audit).
pub fn parse_exposure(
    (status, body): (u16, Vec<u8>),
) -> anyhow::Result<Option<tcpwatch_core::api::ExposureBody>> {
    match status {
        200 => Ok(Some(
            serde_json::from_slice(&body).context("parsing /api/v1/exposure")?,
        )),
        404 => Ok(None),
        s => bail!(
            "GET /api/v1/exposure: HTTP {s}: {}",
            String::from_utf8_lossy(&body)
        ),
    }
}

/// How often `top` asks for a fresh exposure audit.
pub const EXPOSURE_POLL: Duration = Duration::from_secs(5);

/// Polls the exposure audit every [`EXPOSURE_POLL`] until the receiver is gone (a failed poll
/// is retried at the next turn: the stream's status line reports a daemon that went away).
pub fn poll_exposure(addr: &str, tx: &Sender<ClientMsg>) {
    loop {
        // The TIME_WAIT count rides along (a daemon from before it has no `time_wait`).
        if let Ok(body) = get(addr, "/api/v1/status")
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
            && let Some(n) = v["time_wait"]["total"].as_u64()
            && tx.send(ClientMsg::TimeWait(n)).is_err()
        {
            return;
        }
        std::thread::sleep(EXPOSURE_POLL);
        if let Ok(Some(e)) = get_any(addr, "/api/v1/exposure").and_then(parse_exposure)
            && tx.send(ClientMsg::Exposure(Box::new(e))).is_err()
        {
            return;
        }
    }
}

/// The answer to `GET /api/v1/incidents`: the open incidents, `None` for a 404 (a daemon from
/// before incidents), an error for anything else.
pub fn parse_incidents((status, body): (u16, Vec<u8>)) -> anyhow::Result<Option<Vec<Incident>>> {
    match status {
        200 => {
            let b: IncidentsBody =
                serde_json::from_slice(&body).context("parsing /api/v1/incidents")?;
            Ok(Some(b.open))
        }
        404 => Ok(None),
        s => bail!(
            "GET /api/v1/incidents: HTTP {s}: {}",
            String::from_utf8_lossy(&body).trim()
        ),
    }
}

/// Splits a Server-Sent Events byte stream into the `data` of each event.
pub struct SseReader<R> {
    inner: R,
}

impl<R: BufRead> SseReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner }
    }

    /// The next event's data (its `data:` lines joined by `\n`); `None` at end of stream.
    pub fn next_data(&mut self) -> std::io::Result<Option<String>> {
        let mut data: Option<String> = None;
        let mut line = String::new();
        loop {
            line.clear();
            if self.inner.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if let Some(d) = data.take() {
                    return Ok(Some(d));
                }
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            let (field, value) = l.split_once(':').unwrap_or((l, ""));
            if field == "data" {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                }
            }
        }
    }
}

/// Opens `/api/v1/stream`; returns a reader of its events, read as they arrive (a silence
/// longer than [`STREAM_IDLE`] is an error: the daemon sends keep-alives).
pub fn open_stream(addr: &str) -> anyhow::Result<SseReader<Box<dyn BufRead + Send>>> {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    let agent = AGENT.get_or_init(|| agent(STREAM_IDLE));
    let resp = request(agent, addr, "/api/v1/stream", "text/event-stream")?;
    if resp.status() != 200 {
        bail!("GET /api/v1/stream: HTTP {}", resp.status().as_u16());
    }
    let body: Box<dyn BufRead + Send> = Box::new(BufReader::new(resp.into_body().into_reader()));
    Ok(SseReader::new(body))
}

/// Follows the daemon until `tx`'s receiver is gone: subscribe to the stream, load a snapshot,
/// then forward events; on any failure (or a `lagged` notice) start over after a backoff.
/// Subscribing before loading means no change between the two is lost (some may be applied
/// twice, which is harmless: upserts and removals are idempotent).
pub fn follow(addr: &str, tx: &Sender<ClientMsg>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let err = match follow_once(addr, tx) {
            Ok(Stop::ReceiverGone) => return,
            Ok(Stop::Resync) => {
                backoff = Duration::from_millis(250);
                continue;
            }
            Err(e) => e,
        };
        let msg = format!(
            "disconnected: {err:#}; retrying in {:.1}s",
            backoff.as_secs_f64()
        );
        if tx.send(ClientMsg::Status(msg)).is_err() {
            return;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Stop {
    ReceiverGone,
    Resync,
}

fn follow_once(addr: &str, tx: &Sender<ClientMsg>) -> anyhow::Result<Stop> {
    let mut stream = open_stream(addr)?;
    let snap = load(addr)?;
    if tx.send(ClientMsg::Snapshot(snap)).is_err()
        || tx.send(ClientMsg::Status("live".into())).is_err()
    {
        return Ok(Stop::ReceiverGone);
    }
    loop {
        let Some(data) = stream.next_data().context("reading /api/v1/stream")? else {
            bail!("the daemon closed the stream");
        };
        let ev = match parse_event(&data) {
            Ok(ev) => ev,
            // An event this version does not understand: counted and shown, never hidden.
            Err(e) => {
                if tx.send(ClientMsg::BadEvent(e)).is_err() {
                    return Ok(Stop::ReceiverGone);
                }
                continue;
            }
        };
        if let StreamEvent::Lagged { missed, .. } = ev {
            let _ = tx.send(ClientMsg::Status(format!(
                "missed {missed} events: resyncing"
            )));
            return Ok(Stop::Resync);
        }
        if tx.send(ClientMsg::Event(ev)).is_err() {
            return Ok(Stop::ReceiverGone);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read as _, Write as _};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn sse_events_split_across_reads() {
        // Events split across reads (a tiny buffer), with a keep-alive comment in between.
        let body = "data: {\"a\":1}\n\n:\n\ndata: two\ndata: lines\n\n";
        let mut sse = SseReader::new(BufReader::with_capacity(3, Cursor::new(body.as_bytes())));
        assert_eq!(sse.next_data().unwrap().as_deref(), Some("{\"a\":1}"));
        assert_eq!(sse.next_data().unwrap().as_deref(), Some("two\nlines"));
        assert_eq!(sse.next_data().unwrap(), None);
    }

    #[test]
    fn stream_events_parse_the_daemon_shape() {
        let conn = r#"{"type":"conn","op":"remove","key":{"skaddr":1,"netns_cookie":2}}"#;
        let ev = parse_event(conn).unwrap();
        assert!(matches!(
            ev,
            StreamEvent::Conn(crate::state::wire::Delta::Remove { .. })
        ));
        let lag = parse_event(r#"{"type":"lagged","missed":3}"#).unwrap();
        assert_eq!(
            lag,
            StreamEvent::Lagged {
                missed: 3,
                conn_only: false
            }
        );
        let e = parse_event(r#"{"type":"incident","change":"opened"}"#).unwrap_err();
        assert!(e.starts_with("event type `incident`:"), "{e}");
        let e = parse_event("not json").unwrap_err();
        assert!(e.starts_with("event type `?`:"), "{e}");
    }

    #[test]
    fn incidents_404_means_an_older_daemon() {
        assert_eq!(parse_incidents((404, b"not found".to_vec())).unwrap(), None);
        let empty = br#"{"open":[],"recently_resolved":[]}"#.to_vec();
        assert_eq!(parse_incidents((200, empty)).unwrap(), Some(Vec::new()));
        let e = parse_incidents((500, b"boom".to_vec()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTP 500: boom"), "{e}");
        assert!(parse_incidents((200, b"{}".to_vec())).is_err());
    }

    #[test]
    fn no_daemon_is_a_clear_error() {
        // A port nobody listens on: bind, learn the port, close.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let e = load(&addr).unwrap_err().to_string();
        assert!(e.contains(&format!("no tcpwatch daemon at {addr}")), "{e}");
        assert!(e.contains("--standalone"), "{e}");
    }

    #[test]
    fn get_reads_a_local_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let srv = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0_u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            )
            .unwrap();
        });
        assert_eq!(get(&addr, "/x").unwrap(), b"abc");
        srv.join().unwrap();
    }

    /// Reads one request's head from a test server's socket.
    fn read_request(s: &mut std::net::TcpStream) -> String {
        let mut req = Vec::new();
        let mut buf = [0_u8; 1024];
        while !req.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            req.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(req).unwrap()
    }

    #[test]
    fn stream_events_arrive_while_the_stream_stays_open() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let srv = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let req = read_request(&mut s);
            assert!(req.starts_with("GET /api/v1/stream HTTP/1.1"), "{req}");
            let ev = "data: {\"type\":\"lagged\",\"missed\":1}\n\n";
            write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                 transfer-encoding: chunked\r\n\r\n{:x}\r\n{ev}\r\n",
                ev.len()
            )
            .unwrap();
            s.flush().unwrap();
            // Keep the stream open until the client has read the event.
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        });
        let mut sse = open_stream(&addr).unwrap();
        let data = sse.next_data().unwrap().unwrap();
        assert_eq!(
            parse_event(&data).unwrap(),
            StreamEvent::Lagged {
                missed: 1,
                conn_only: false
            }
        );
        done_tx.send(()).unwrap();
        srv.join().unwrap();
    }
}
