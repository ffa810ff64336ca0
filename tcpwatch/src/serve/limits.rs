//! Per-request bounds: the cap on stream subscribers and on response size (middleware), and
//! the byte-activity tracking behind the idle timeout of [`super::conn`].
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;

use super::stats::{self, reason};

/// The path of the Server-Sent Events stream.
pub const STREAM_PATH: &str = "/api/v1/stream";

/// Request bounds of one listener.
#[derive(Clone)]
pub struct Limits {
    pub listener: &'static str,
    pub subscribers: Arc<Semaphore>,
    pub max_response_bytes: u64,
}

/// Caps stream subscribers (503 beyond `http.max_stream_subscribers`) and response bodies
/// (507 beyond `http.max_response_bytes`).
pub async fn bound(State(l): State<Limits>, req: Request, next: Next) -> Response {
    if req.uri().path() == STREAM_PATH {
        let Ok(permit) = l.subscribers.clone().try_acquire_owned() else {
            stats::rejected(l.listener, reason::STREAM_SUBSCRIBERS);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "10")],
                "too many stream subscribers (http.max_stream_subscribers); retry later\n",
            )
                .into_response();
        };
        let resp = next.run(req).await;
        if !resp.status().is_success() {
            return resp;
        }
        stats::subscribers(l.listener, 1);
        let guard = Subscriber {
            listener: l.listener,
            _permit: permit,
        };
        // The permit lives as long as the body: until the client goes or is cut off.
        let (parts, body) = resp.into_parts();
        let body = Body::from_stream(body.into_data_stream().map(move |chunk| {
            let _ = &guard;
            chunk
        }));
        return Response::from_parts(parts, body);
    }
    let resp = next.run(req).await;
    let size = resp.body().size_hint();
    let over = size.lower() > l.max_response_bytes;
    if over {
        stats::rejected(l.listener, reason::RESPONSE_SIZE);
        return (
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "the response would be {} bytes, over http.max_response_bytes ({}): narrow it \
                 with filters or `limit`\n",
                size.lower(),
                l.max_response_bytes
            ),
        )
            .into_response();
    }
    resp
}

struct Subscriber {
    listener: &'static str,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        stats::subscribers(self.listener, -1);
    }
}

/// Milliseconds since `base` of the last byte read or written.
#[derive(Clone)]
pub struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    #[must_use]
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since the last byte moved.
    #[must_use]
    pub fn idle_ms(&self) -> u64 {
        self.now_ms()
            .saturating_sub(self.last_ms.load(Ordering::Relaxed))
    }
}

/// An I/O stream that records when bytes move.
pub struct Tracked<T> {
    pub inner: T,
    pub activity: Activity,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
