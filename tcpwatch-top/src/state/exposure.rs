//! The Exposure view: the daemon's exposure audit (`GET /api/v1/exposure`,
//! `docs/exposure.md`), one row per process and remote endpoint, refreshed by polling (the
//! audit is not on the stream).
use std::cmp::Ordering;

use tcpwatch_core::api::ExposureBody;
use tcpwatch_core::exposure::{ExposureGroup, wait_text};

use super::{App, Detail, RowId, SortKey};

/// A row's identity: process, remote endpoint and namespace.
#[must_use]
pub fn exposure_key(g: &ExposureGroup) -> String {
    format!("{}|{}|{}", g.process, g.remote, g.netns.cookie)
}

/// Longest first, never before any finite wait.
fn cmp_worst(a: Option<u64>, b: Option<u64>) -> Ordering {
    b.unwrap_or(u64::MAX).cmp(&a.unwrap_or(u64::MAX))
}

impl App {
    /// Replaces the audit (initial load and every poll). While paused the new audit is not
    /// applied (the next poll after resuming brings a fresh one).
    /// The host's `TIME_WAIT` count (`/api/v1/status`), polled with the audit.
    pub fn apply_time_wait(&mut self, n: u64) {
        if self.paused || self.time_wait == Some(n) {
            return;
        }
        self.time_wait = Some(n);
        self.dirty = true;
    }

    /// The host's `TIME_WAIT` sockets as the daemon counted them (not in the connections).
    #[must_use]
    pub fn time_wait(&self) -> Option<u64> {
        self.time_wait
    }

    pub fn apply_exposure(&mut self, e: ExposureBody) {
        if self.paused {
            return;
        }
        self.exposure = Some(e);
        self.dirty = true;
    }

    /// The audit, `None` before the first answer or when the daemon does not serve it.
    #[must_use]
    pub fn exposure(&self) -> Option<&ExposureBody> {
        self.exposure.as_ref()
    }

    /// The Exposure view's rows: groups matching the filter (process or remote), sorted.
    pub(super) fn exposure_rows(&self, filter: &str, sort: SortKey) -> Vec<ExposureGroup> {
        let Some(e) = &self.exposure else {
            return Vec::new();
        };
        let mut v: Vec<ExposureGroup> = e
            .groups
            .iter()
            .filter(|g| {
                filter.is_empty()
                    || g.process.to_lowercase().contains(filter)
                    || g.remote.to_string().contains(filter)
            })
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            let o = match sort {
                SortKey::Exposed => b.exposed.cmp(&a.exposed),
                SortKey::Owner => a.process.cmp(&b.process),
                SortKey::Remote => a.remote.cmp(&b.remote),
                _ => cmp_worst(a.worst_case_ms, b.worst_case_ms).then(b.exposed.cmp(&a.exposed)),
            };
            o.then_with(|| exposure_key(a).cmp(&exposure_key(b)))
        });
        v
    }

    /// Row `i` of the Exposure view.
    #[must_use]
    pub fn exposure_row(&self, i: usize) -> Option<&ExposureGroup> {
        self.rows.exposure.get(i)
    }

    /// The detail pane of an Exposure row: the diagnosis and its sockets' figures.
    pub(super) fn exposure_detail(&self, key: &str) -> Option<Detail> {
        let i = self
            .rows
            .ids
            .iter()
            .position(|r| *r == RowId::Exposure(key.to_owned()))?;
        let g = self.rows.exposure.get(i)?;
        let threshold = self.exposure.as_ref().map_or(0, |e| e.threshold_seconds);
        let mut lines = vec![
            format!("{} -> {} (netns {})", g.process, g.remote, g.netns.inode),
            format!(
                "{} connections, {} exposed above {}s ({} never), {} with data in flight; \
                 worst case {}",
                g.connections,
                g.exposed,
                threshold,
                g.never,
                g.in_flight,
                wait_text(g.worst_case_ms)
            ),
            String::new(),
            g.diagnosis.clone(),
            String::new(),
        ];
        for s in &g.sockets {
            let e = &s.exposure;
            let ka = e.keepalive.map_or_else(
                || "keepalive off".to_owned(),
                |k| {
                    format!(
                        "keepalive {}s/{}s/{}",
                        k.time_ms / 1000,
                        k.intvl_ms / 1000,
                        k.probes
                    )
                },
            );
            lines.push(format!(
                "{}: {} ({}) - in flight {}, idle {}; TCP_USER_TIMEOUT {}ms, {ka}, \
                 tcp_retries2={}",
                s.local,
                wait_text(e.worst_case_ms),
                if e.in_flight_now {
                    "data in flight"
                } else {
                    "idle"
                },
                wait_text(Some(e.in_flight_ms)),
                wait_text(e.idle_ms),
                e.user_timeout_ms,
                e.tcp_retries2
            ));
        }
        if g.sockets_omitted > 0 {
            lines.push(format!("... and {} more", g.sockets_omitted));
        }
        Some(Detail {
            title: format!("exposure {}", g.process),
            lines,
            ..Detail::default()
        })
    }
}
