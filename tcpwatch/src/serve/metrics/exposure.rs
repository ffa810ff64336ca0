//! Metrics of the exposure audit (`docs/exposure.md`): a per-node histogram of worst-case
//! waits for a vanished peer and the top-K owners by exposed connections. [`series`] bounds
//! them.
use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto;
use tcpwatch_core::exposure::{ExposureReport, HISTOGRAM_BOUNDS_S};

use super::{Builder, to_i64};

/// Series written by [`exposure`] for a given `daemon.top_k`: the histogram (buckets, `+Inf`,
/// `_sum`, `_count`), three gauges, and two top-K families.
#[must_use]
pub fn series(top_k: usize) -> usize {
    HISTOGRAM_BOUNDS_S.len() + 3 + 3 + 2 * top_k
}

pub(super) fn exposure(out: &Builder, r: &ExposureReport, top_k: usize) -> prometheus::Result<()> {
    out.add(WorstCaseHistogram::new(r)?)?;
    out.gauge(
        "tcpwatch_exposure_never_connections",
        "ESTABLISHED connections, idle without keepalive, that would never notice a vanished \
         peer.",
        to_i64(r.never),
    )?;
    out.gauge(
        "tcpwatch_exposure_exposed_connections",
        "ESTABLISHED connections whose worst-case wait exceeds exposure.threshold_seconds.",
        to_i64(r.exposed),
    )?;
    out.gauge(
        "tcpwatch_exposure_connections",
        "ESTABLISHED connections audited.",
        to_i64(r.connections),
    )?;
    let exposed = out.gauge_vec(
        "tcpwatch_exposure_owner_exposed_connections",
        "Exposed connections of each of the top-K (daemon.top_k) processes with the most.",
        &["owner"],
    )?;
    let worst = out.add(prometheus::GaugeVec::new(
        prometheus::Opts::new(
            "tcpwatch_exposure_owner_worst_case_seconds",
            "Worst-case wait of the same processes' connections (+Inf: never).",
        ),
        &["owner"],
    )?)?;
    for p in r.processes.iter().filter(|p| p.exposed > 0).take(top_k) {
        exposed
            .with_label_values(&[p.process.as_str()])
            .set(i64::from(p.exposed));
        #[expect(clippy::cast_precision_loss, reason = "ms to seconds")]
        let secs = p
            .worst_case_ms
            .map_or(f64::INFINITY, |ms| ms as f64 / 1000.0);
        worst.with_label_values(&[p.process.as_str()]).set(secs);
    }
    Ok(())
}

const HISTOGRAM_NAME: &str = "tcpwatch_exposure_worst_case_seconds";
const HISTOGRAM_HELP: &str = "Worst-case wait of ESTABLISHED connections for a vanished peer \
    (retransmission give-up, TCP_USER_TIMEOUT or keepalive, whichever applies now). \
    Connections that would wait forever are in tcpwatch_exposure_never_connections, not here.";

/// The audit's histogram as a Prometheus histogram (counted by the audit over every
/// connection, not only the listed ones).
#[derive(Clone)]
struct WorstCaseHistogram {
    desc: Desc,
    family: proto::MetricFamily,
}

impl WorstCaseHistogram {
    fn new(r: &ExposureReport) -> prometheus::Result<Self> {
        let desc = Desc::new(
            HISTOGRAM_NAME.to_owned(),
            HISTOGRAM_HELP.to_owned(),
            Vec::new(),
            HashMap::new(),
        )?;
        let mut h = proto::Histogram::default();
        h.set_sample_count(r.histogram.count);
        #[expect(clippy::cast_precision_loss, reason = "ms to seconds")]
        h.set_sample_sum(r.histogram.sum_ms as f64 / 1000.0);
        let buckets = r
            .histogram
            .buckets
            .iter()
            .map(|&(le, n)| {
                let mut b = proto::Bucket::default();
                #[expect(clippy::cast_precision_loss, reason = "small bucket bounds")]
                b.set_upper_bound(le as f64);
                b.set_cumulative_count(n);
                b
            })
            .collect();
        h.set_bucket(buckets);
        let mut m = proto::Metric::default();
        m.set_histogram(h);
        let mut family = proto::MetricFamily::default();
        family.set_name(HISTOGRAM_NAME.to_owned());
        family.set_help(HISTOGRAM_HELP.to_owned());
        family.set_field_type(proto::MetricType::HISTOGRAM);
        family.mut_metric().push(m);
        Ok(Self { desc, family })
    }
}

impl Collector for WorstCaseHistogram {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        vec![self.family.clone()]
    }
}
