//! One serialization per stream event, whatever the number of subscribers: a task subscribed
//! to the daemon's event channel encodes each event to JSON once and hands the text to every
//! `/api/v1/stream` client. (Encoding per client made 32 subscribers cost 32 encodings per
//! event, enough to delay the event path under a flood; see `tests/security.rs`.) The task
//! runs only while there are subscribers, so without any the daemon builds no stream events.
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Mutex, broadcast};

use crate::state::Shared;

/// Frames queued per subscriber (a slower one is told how many it missed).
const CAPACITY: usize = 8192;

/// What a subscriber receives: an event's JSON, or how many events the encoder itself missed.
#[derive(Clone, Debug)]
pub enum Frame {
    Json(Arc<str>),
    Lagged(u64),
}

#[derive(Clone)]
pub struct Frames {
    tx: broadcast::Sender<Frame>,
    /// Whether the encoding task runs.
    running: Arc<Mutex<bool>>,
}

impl Default for Frames {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            running: Arc::new(Mutex::new(false)),
        }
    }
}

impl Frames {
    /// A receiver of every event from now on (starts the encoding task if needed).
    pub async fn subscribe(&self, shared: &Arc<Mutex<Shared>>) -> broadcast::Receiver<Frame> {
        let mut running = self.running.lock().await;
        let rx = self.tx.subscribe();
        if !*running {
            let events = shared.lock().await.stream.subscribe();
            *running = true;
            tokio::spawn(self.clone().encode(events, shared.clone()));
        }
        rx
    }

    async fn encode(
        self,
        mut events: broadcast::Receiver<tcpwatch_core::api::StreamEvent>,
        shared: Arc<Mutex<Shared>>,
    ) {
        loop {
            let frame = match events.recv().await {
                Ok(ev) => match serde_json::to_string(&ev) {
                    Ok(json) => Frame::Json(json.into()),
                    Err(e) => {
                        tracing::warn!(error = %e, "stream event not encodable; skipped");
                        continue;
                    }
                },
                Err(RecvError::Lagged(missed)) => {
                    shared.lock().await.stats.stream_lagged += missed;
                    Frame::Lagged(missed)
                }
                Err(RecvError::Closed) => break,
            };
            if self.tx.send(frame).is_err() {
                // No subscriber left: stop (and stop the daemon building events), unless one
                // is joining right now.
                let mut running = self.running.lock().await;
                if self.tx.receiver_count() == 0 {
                    *running = false;
                    return;
                }
            }
        }
        *self.running.lock().await = false;
    }
}
