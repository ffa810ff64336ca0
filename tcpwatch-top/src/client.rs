//! Talking to the daemon over loopback: a minimal HTTP/1.1 GET and a Server-Sent Events reader
//! on `std::net::TcpStream` (no HTTP library: the daemon is local and the needs are small).
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::state::parse_event;
use crate::state::wire::{ConnectionsBody, FindingsBody, IncidentsBody, Snapshot, StreamEvent};
use anyhow::{Context as _, anyhow, bail};
use tcpwatch_core::incident::Incident;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A whole snapshot of 100k connections is large: allow time for it.
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

fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    let sa = resolve(addr)?;
    let s = TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT)
        .map_err(|e| anyhow!("{} ({e})", no_daemon_message(addr)))?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.set_write_timeout(Some(READ_TIMEOUT))?;
    Ok(s)
}

/// Response head: status and whether the body is chunked / its length.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
}

/// Reads the status line and headers.
pub fn read_head(r: &mut impl BufRead) -> anyhow::Result<Head> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {:?}", line.trim_end()))?;
    let mut head = Head {
        status,
        chunked: false,
        content_length: None,
    };
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed in the response headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(head);
        }
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                head.chunked = true;
            } else if k == "content-length" {
                head.content_length = v.parse().ok();
            }
        }
    }
}

/// Decodes `Transfer-Encoding: chunked` from the inner reader.
pub struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            left: 0,
            done: false,
        }
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            // Skip the CRLF that ends the previous chunk, then read the size line.
            while line.trim().is_empty() {
                line.clear();
                if self.inner.read_line(&mut line)? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            let size = line.trim().split(';').next().unwrap_or("");
            let n = usize::from_str_radix(size.trim(), 16).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad chunk size {size:?}"),
                )
            })?;
            if n == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = n;
        }
        let want = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..want])?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= got;
        Ok(got)
    }
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

/// `GET path`: the status and the whole body, whatever the status.
pub fn get_any(addr: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = connect(addr)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::with_capacity(1 << 16, s);
    let head = read_head(&mut r).with_context(|| format!("GET {path}"))?;
    let mut body = Vec::new();
    if head.chunked {
        Chunked::new(r).read_to_end(&mut body)?;
    } else if let Some(n) = head.content_length {
        r.take(n as u64).read_to_end(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok((head.status, body))
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

/// Opens `/api/v1/stream`; returns a reader of its events.
pub fn open_stream(addr: &str) -> anyhow::Result<SseReader<Box<dyn BufRead + Send>>> {
    let mut s = connect(addr)?;
    s.set_read_timeout(Some(STREAM_IDLE))?;
    let req =
        format!("GET /api/v1/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut r = BufReader::new(s);
    let head = read_head(&mut r).context("GET /api/v1/stream")?;
    if head.status != 200 {
        bail!("GET /api/v1/stream: HTTP {}", head.status);
    }
    let body: Box<dyn BufRead + Send> = if head.chunked {
        Box::new(BufReader::new(Chunked::new(r)))
    } else {
        Box::new(r)
    };
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
    use std::io::Cursor;
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        let mut out = String::new();
        Chunked::new(Cursor::new(&raw[..]))
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "hello, world");
        let bad = b"zz\r\nhello\r\n";
        assert!(
            Chunked::new(Cursor::new(&bad[..]))
                .read_to_string(&mut out)
                .is_err()
        );
    }

    #[test]
    fn heads_parse() {
        let mut r = Cursor::new(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nrest"[..]);
        assert_eq!(
            read_head(&mut r).unwrap(),
            Head {
                status: 200,
                chunked: true,
                content_length: None
            }
        );
        let mut r = Cursor::new(&b"HTTP/1.1 404 Not Found\r\ncontent-length: 3\r\n\r\n"[..]);
        assert_eq!(read_head(&mut r).unwrap().content_length, Some(3));
        assert!(read_head(&mut Cursor::new(&b"garbage\r\n"[..])).is_err());
    }

    #[test]
    fn sse_events_split_through_chunks() {
        // Events split across chunk boundaries, with a keep-alive comment in between.
        let body = "data: {\"a\":1}\n\n:\n\ndata: two\ndata: lines\n\n";
        let (x, y) = body.split_at(9);
        let raw = format!("{:x}\r\n{x}\r\n{:x}\r\n{y}\r\n0\r\n\r\n", x.len(), y.len());
        let mut sse = SseReader::new(BufReader::new(Chunked::new(Cursor::new(raw.into_bytes()))));
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
}
