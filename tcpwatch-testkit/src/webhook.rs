//! An HTTP server on loopback that records the body of every request and answers 200: the
//! webhook receiver Alertmanager notifies in the alerting tests.
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// An HTTP server that records request bodies (Alertmanager's webhook receiver).
pub struct Webhook {
    pub port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    #[must_use]
    pub fn start() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bodies.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((conn, _)) => {
                        if let Some(body) = serve_one(conn) {
                            b.lock().unwrap().push(body);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self {
            port,
            bodies,
            stop,
            thread: Some(thread),
        }
    }

    /// (alertname, status, labels) of every alert of every notification so far.
    #[must_use]
    pub fn alerts(&self) -> Vec<(String, String, Value)> {
        let bodies = self.bodies.lock().unwrap().clone();
        let mut out = Vec::new();
        for b in bodies {
            let v: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
            for a in v["alerts"].as_array().into_iter().flatten() {
                let name = a["labels"]["alertname"].as_str().unwrap_or("").to_owned();
                let status = a["status"].as_str().unwrap_or("").to_owned();
                out.push((name, status, a["labels"].clone()));
            }
        }
        out
    }

    #[must_use]
    pub fn has(&self, alertname: &str, status: &str) -> bool {
        self.alerts()
            .iter()
            .any(|(n, s, _)| n == alertname && s == status)
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP request, answers 200 and closes; returns the body.
fn serve_one(mut conn: TcpStream) -> Option<String> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 16_384];
    let body = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                break body.to_owned();
            }
        }
    };
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(body)
}
