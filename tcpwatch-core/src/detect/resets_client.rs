//! `reset_burst`, client side: RSTs received by one process's connections to one remote
//! endpoint (netns, remote address and port, connecting process), from the kernel's
//! per-endpoint counts. A client's resets are spread over its ephemeral local ports, so the
//! per-port rule (`resets`) cannot see them; keyed by the remote endpoint they add up.
//! Same thresholds (`min_resets` in `window_seconds`) and lifecycle as the per-port rule;
//! accepted connections (no connecting process) are left to the per-port rule.
use crate::config::{ResetBurstConfig, seconds_to_ns};
use crate::detect::lifecycle::Candidate;
use crate::detect::window::Windowed;
use crate::detect::{DetectContext, Snapshot, peer, text};
use crate::endpoints::{EndpointFacts, EndpointKey};
use crate::model::{FindingKind, MonoNs, Severity};

const KIND: FindingKind = FindingKind::ResetBurst;

#[derive(Debug, Default)]
pub(crate) struct ClientResetState {
    win: Windowed<EndpointKey, 1>,
}

impl ClientResetState {
    pub(crate) fn detect(
        &mut self,
        now: MonoNs,
        cfg: &ResetBurstConfig,
        snap: &Snapshot<'_>,
        ctx: &DetectContext<'_>,
        facts: &EndpointFacts,
        out: &mut Vec<Candidate>,
    ) {
        let window = seconds_to_ns(cfg.window_seconds);
        let min = u64::from(cfg.min_resets);
        let counters = facts
            .endpoints
            .iter()
            .filter(|(k, s)| k.pid != 0 && s.resets_received + s.stale_resets > 0)
            .map(|(k, s)| (*k, [s.resets_received + s.stale_resets]));
        for (key, d) in self.win.update(now, window, counters, |d| d[0] >= min) {
            let Some(since) = d.since else { continue };
            let comm = facts
                .endpoints
                .get(&key)
                .map(|s| s.comm.clone())
                .unwrap_or_default();
            let n = d.delta[0];
            let span = now.saturating_sub(d.from).max(1);
            let server = peer::server_on_host(snap, key.netns_cookie, key.remote);
            out.push(Candidate {
                id: peer::id(KIND, &key),
                kind: KIND,
                severity: Severity::Warning,
                subject: peer::subject(ctx, &key, &comm),
                cause: "received",
                diagnosis: format!(
                    "reset burst from {} ({}) to {}: {n} RST received in the last {}; the \
                     server aborts connections (closed with a request in flight, crashed or \
                     restarted, or hit an idle timeout)",
                    key.remote,
                    peer::server_text(server),
                    peer::process(key.pid, &comm),
                    text::dur(span)
                ),
                since,
                evidence: text::evidence([
                    ("resets_received", text::num(n)),
                    ("resets_total", text::num(n)),
                    ("rate_per_second", text::num(n) / text::secs(span)),
                    ("window_seconds", text::secs(span)),
                ]),
                socket: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use crate::config::DetectorConfig;
    use crate::detect::testutil::{Harness, NETNS, changes};
    use crate::endpoints::{EndpointFacts, EndpointKey, EndpointStats};
    use crate::model::Lifecycle::{Opened, Resolved};
    use crate::model::{FindingKind, Subject};

    fn facts(pid: u32, received: u64) -> EndpointFacts {
        let mut f = EndpointFacts::default();
        f.endpoints.insert(
            EndpointKey {
                netns_cookie: NETNS.cookie,
                remote: "10.0.0.2:8080".parse().unwrap(),
                pid,
            },
            EndpointStats {
                comm: "client".to_owned(),
                resets_received: received,
                ..EndpointStats::default()
            },
        );
        f
    }

    #[test]
    fn client_resets_add_up_per_remote_endpoint_and_resolve() {
        let mut h = Harness::new(DetectorConfig::default());
        h.det.set_endpoint_facts(EndpointFacts::default());
        h.step(0.0, &[]);
        h.det.set_endpoint_facts(facts(77, 9));
        assert!(h.step_kind(1.0, &[], FindingKind::ResetBurst).is_empty());
        h.det.set_endpoint_facts(facts(77, 12));
        let ch = h.step_kind(2.0, &[], FindingKind::ResetBurst);
        assert_eq!(changes(&ch), vec![Opened]);
        let f = &ch[0].finding;
        assert_eq!(f.id, "reset_burst:1:77:10.0.0.2:8080");
        assert!(matches!(&f.subject, Subject::Peer { owner: Some(o), .. } if o.pid == 77));
        assert!(
            f.diagnosis.starts_with(
                "reset burst from 10.0.0.2:8080 (server not on this host) to client[77]: 12 RST \
                 received in the last 2s"
            ),
            "{}",
            f.diagnosis
        );
        let mut log = Vec::new();
        for t in 3..20 {
            log.extend(
                h.step_kind(f64::from(t), &[], FindingKind::ResetBurst)
                    .into_iter()
                    .map(|c| (t, c.change)),
            );
        }
        assert_eq!(log, vec![(14, Resolved)]);
        // Accepted connections (pid 0) are the per-port rule's.
        let mut h = Harness::new(DetectorConfig::default());
        h.step(0.0, &[]);
        h.det.set_endpoint_facts(facts(0, 50));
        assert!(h.step_kind(1.0, &[], FindingKind::ResetBurst).is_empty());
    }
}
