//! The one place self-metrics come from: a long-lived [`Collector`] (as `ebpf_exporter`'s) that,
//! at each scrape, reads the last published [`View`] (table, findings, incidents, kernel and
//! daemon counters, owner scans) and the HTTP listeners' counters (`serve::stats`). Nothing
//! is gathered under the daemon's lock, and nothing is pushed into metrics elsewhere.
use std::sync::Mutex;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder as _, Registry, TextEncoder};
use tcpwatch_core::exposure::AuditCache;

use super::{Builder, daemon, findings, kernel, pods, programs, table};
use crate::view::{Hub, View};

/// Builds the families of one scrape from a published view (the exposure audit of the view
/// computed here: tests; the daemon's collector reuses its last one, [`SelfCollector`]).
#[cfg(test)]
pub fn build(s: &View, top_k: usize) -> prometheus::Result<Registry> {
    build_with(s, top_k, &s.exposure())
}

/// Builds the families of one scrape from a published view and its exposure audit.
pub fn build_with(
    s: &View,
    top_k: usize,
    exposure: &tcpwatch_core::api::ExposureBody,
) -> prometheus::Result<Registry> {
    let b = Builder {
        reg: Registry::new(),
    };
    super::connections(&b, s)?;
    pods(&b, s)?;
    findings(&b, s, top_k)?;
    super::incidents::incidents(&b, &super::incidents::IncidentFacts::of(s), top_k)?;
    kernel(&b, s)?;
    super::state_changes::state_changes(&b, s)?;
    super::sweep_walk::sweep_walk(&b, s)?;
    daemon(&b, s)?;
    table(&b, s)?;
    programs(&b, s)?;
    super::bpf_programs::register(&b, &s.programs)?;
    super::endpoints::endpoints(&b, s)?;
    super::owners::owners(&b, s)?;
    super::exposure::exposure(&b, exposure, top_k)?;
    Ok(b.reg)
}

/// Encodes a registry in the text format.
#[cfg(test)]
pub fn encode(reg: &Registry) -> prometheus::Result<String> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&reg.gather(), &mut buf)?;
    String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// The daemon's collector, registered once in the registry `/metrics` gathers.
pub struct SelfCollector {
    hub: Hub,
    /// `daemon.top_k`.
    top_k: usize,
    /// Why the last collection failed (a bug: families are fixed), for the scrape to report.
    error: Mutex<Option<String>>,
    /// The last scrape's exposure audit, reused while the fields it reads are unchanged (a
    /// whole-table audit per scrape was most of a scrape's time at 100 000 connections).
    exposure: Mutex<AuditCache>,
}

impl SelfCollector {
    #[must_use]
    pub fn new(hub: Hub, top_k: usize) -> Self {
        Self {
            hub,
            top_k,
            error: Mutex::new(None),
            exposure: Mutex::new(AuditCache::default()),
        }
    }

    fn families(&self) -> prometheus::Result<Vec<MetricFamily>> {
        let view = self.hub.view();
        let conns = view.conns.iter().map(AsRef::as_ref);
        let exposure = match self.exposure.lock() {
            Ok(mut cache) => cache.audit(conns, &view.netns, view.exposure_threshold_s),
            // A scrape panicked while auditing: audit afresh (the cache is only a shortcut).
            Err(_) => view.exposure(),
        };
        let reg = build_with(&view, self.top_k, &exposure)?;
        crate::serve::stats::register(&reg)?;
        Ok(reg.gather())
    }

    /// One scrape in the text format; an error says why the families could not be built.
    pub fn scrape(&self, reg: &Registry) -> Result<String, String> {
        let families = reg.gather();
        if let Some(e) = self.error.lock().ok().and_then(|mut e| e.take()) {
            return Err(e);
        }
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut buf)
            .map_err(|e| e.to_string())?;
        String::from_utf8(buf).map_err(|e| e.to_string())
    }
}

impl Collector for SelfCollector {
    /// None: the families and their labels follow the view (an unchecked collector).
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        match self.families() {
            Ok(f) => f,
            Err(e) => {
                if let Ok(mut slot) = self.error.lock() {
                    *slot = Some(e.to_string());
                }
                Vec::new()
            }
        }
    }
}
