//! One serialization per stream event, whatever the number of subscribers: a task subscribed
//! to the daemon's event channel encodes each event to JSON once and hands the text to every
//! `/api/v1/stream` client. (Encoding per client made 32 subscribers cost 32 encodings per
//! event, enough to delay the event path under a flood; see `tests/security.rs`.) The task
//! runs only while there are subscribers, so without any the daemon builds no stream events.
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Mutex, broadcast};

use crate::view::Hub;

/// Frames queued per subscriber (a slower one is told how many it missed).
const CAPACITY: usize = 8192;

/// Finding and incident frames queued per subscriber (they have a channel of their own: a
/// flood of connection deltas never pushes them out).
const CHANGES_CAPACITY: usize = 65_536;

/// What a subscriber receives: an event's JSON, or how many events the encoder itself missed
/// (`conn_only`: only connection deltas).
#[derive(Clone, Debug)]
pub enum Frame {
    Json(Arc<str>),
    Lagged { missed: u64, conn_only: bool },
}

#[derive(Clone)]
pub struct Frames {
    /// Connection deltas.
    tx: broadcast::Sender<Frame>,
    /// Finding and incident changes.
    changes_tx: broadcast::Sender<Frame>,
    /// Whether the encoding task runs.
    running: Arc<Mutex<bool>>,
}

/// One subscriber's two queues: read `changes` first.
pub struct Subscription {
    pub conns: broadcast::Receiver<Frame>,
    pub changes: broadcast::Receiver<Frame>,
}

impl Default for Frames {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            changes_tx: broadcast::channel(CHANGES_CAPACITY).0,
            running: Arc::new(Mutex::new(false)),
        }
    }
}

impl Frames {
    /// Receivers of every event from now on (starts the encoding task if needed).
    pub async fn subscribe(&self, hub: &Hub) -> Subscription {
        let mut running = self.running.lock().await;
        let sub = Subscription {
            conns: self.tx.subscribe(),
            changes: self.changes_tx.subscribe(),
        };
        if !*running {
            let (events, changes) = (hub.stream.subscribe(), hub.changes.subscribe());
            *running = true;
            tokio::spawn(self.clone().encode(events, changes, hub.clone()));
        }
        sub
    }

    async fn encode(
        self,
        mut events: broadcast::Receiver<tcpwatch_core::api::StreamEvent>,
        mut changes: broadcast::Receiver<tcpwatch_core::api::StreamEvent>,
        hub: Hub,
    ) {
        loop {
            // Changes first: they are few and must not wait behind a flood of deltas.
            let (got, conn) = tokio::select! {
                biased;
                ev = changes.recv() => (ev, false),
                ev = events.recv() => (ev, true),
            };
            let frame = match got {
                Ok(ev) => match encode_event(ev) {
                    Ok(json) => Frame::Json(json.into()),
                    Err(e) => {
                        tracing::warn!(error = %e, "stream event not encodable; skipped");
                        continue;
                    }
                },
                Err(RecvError::Lagged(missed)) => {
                    hub.add_lagged(missed);
                    Frame::Lagged {
                        missed,
                        conn_only: conn,
                    }
                }
                Err(RecvError::Closed) => break,
            };
            let sent = if conn {
                self.tx.send(frame)
            } else {
                self.changes_tx.send(frame)
            };
            if sent.is_err() {
                // No subscriber left: stop (and stop the daemon building events), unless one
                // is joining right now.
                let mut running = self.running.lock().await;
                if self.tx.receiver_count() == 0 && self.changes_tx.receiver_count() == 0 {
                    *running = false;
                    return;
                }
            }
        }
        *self.running.lock().await = false;
    }
}

/// One stream event as JSON, with the wall-clock twins of its times from one reading
/// (docs/api.md).
fn encode_event(mut ev: tcpwatch_core::api::StreamEvent) -> serde_json::Result<String> {
    ev.fill_wall_times(&tcpwatch_core::wall::WallClock::now());
    serde_json::to_string(&ev)
}
