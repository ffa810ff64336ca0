//! Tests of the incident families of `/metrics`.
#![allow(
    clippy::float_cmp,
    reason = "sample values are small integers, exact in f64"
)]
use prometheus::Registry;
use tcpwatch_common::tcp_state;
use tcpwatch_core::model::{NS_PER_SEC, Severity};

use super::*;
use crate::alerts::incident_tests::incident;
use crate::serve::metrics::tests::{evaluate_at, parse, shared_with, sock};
use crate::serve::metrics::{build, encode};

fn samples(facts: &IncidentFacts, top_k: usize) -> Vec<(String, String, f64)> {
    let b = Builder {
        reg: Registry::new(),
    };
    incidents(&b, facts, top_k).unwrap();
    parse(&encode(&b.reg).unwrap())
}

/// Three incidents: a critical listener (oldest critical), a newer critical upstream and a
/// warning leak.
fn three() -> Vec<Incident> {
    let mut a = incident(IncidentKind::ListenerNotAccepting, Severity::Critical);
    a.id = "a".into();
    let mut b = incident(IncidentKind::UpstreamUnreachable, Severity::Critical);
    b.id = "b".into();
    b.since += NS_PER_SEC;
    b.root.local_port = None;
    b.root.remote = Some("10.9.9.9:443".parse().unwrap());
    let mut c = incident(IncidentKind::CloseWaitLeak, Severity::Warning);
    c.id = "c".into();
    c.since = 0;
    vec![c, b, a]
}

#[test]
fn every_kind_and_severity_is_exported_and_counts_add_up() {
    let list = three();
    let facts = IncidentFacts {
        open: list.iter().collect(),
        opened: vec![
            (IncidentKind::ListenerNotAccepting, 2),
            (IncidentKind::UpstreamUnreachable, 1),
        ],
        overflowed: 3,
    };
    let m = samples(&facts, 10);
    let get =
        |name: &str, labels: &str| m.iter().find(|x| x.0 == name && x.1 == labels).map(|x| x.2);
    let open: Vec<_> = m
        .iter()
        .filter(|x| x.0 == "tcpwatch_incidents_open")
        .collect();
    assert_eq!(open.len(), IncidentKind::ALL.len() * 3);
    assert_eq!(open.iter().map(|x| x.2).sum::<f64>(), 3.0);
    assert_eq!(
        get(
            "tcpwatch_incidents_open",
            "kind=\"listener_not_accepting\",severity=\"critical\""
        ),
        Some(1.0)
    );
    assert_eq!(
        get(
            "tcpwatch_incidents_open",
            "kind=\"reset_storm\",severity=\"info\""
        ),
        Some(0.0)
    );
    assert_eq!(
        get(
            "tcpwatch_incidents_opened_total",
            "kind=\"listener_not_accepting\""
        ),
        Some(2.0)
    );
    assert_eq!(
        get("tcpwatch_incidents_opened_total", "kind=\"reset_storm\""),
        Some(0.0)
    );
    assert_eq!(get("tcpwatch_incidents_overflowed", ""), Some(3.0));
    assert_eq!(
        get(
            "tcpwatch_incident",
            "id=\"b\",kind=\"upstream_unreachable\",port=\"\",process=\"server\",remote=\"10.9.9.9:443\",severity=\"critical\""
        ),
        Some(1.0)
    );
    assert_eq!(m.len(), incident_series(10) - 10 + 3);
}

#[test]
fn top_k_keeps_the_most_severe_then_oldest() {
    let list = three();
    let facts = IncidentFacts {
        open: list.iter().collect(),
        opened: Vec::new(),
        overflowed: 0,
    };
    let ids: Vec<&str> = worst_first(&facts.open)
        .iter()
        .map(|i| i.id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let m = samples(&facts, 2);
    let top: Vec<&str> = m
        .iter()
        .filter(|x| x.0 == "tcpwatch_incident")
        .map(|x| x.1.as_str())
        .collect();
    assert_eq!(top.len(), 2, "{top:?}");
    assert!(top.iter().any(|l| l.starts_with("id=\"a\"")), "{top:?}");
    assert!(top.iter().any(|l| l.starts_with("id=\"b\"")), "{top:?}");
    // 10 000 open incidents: still top_k series.
    let many: Vec<Incident> = (0..10_000)
        .map(|n| {
            let mut i = incident(IncidentKind::CloseWaitLeak, Severity::Warning);
            i.id = format!("i{n}");
            i
        })
        .collect();
    let facts = IncidentFacts {
        open: many.iter().collect(),
        opened: Vec::new(),
        overflowed: 0,
    };
    let m = samples(&facts, 10);
    assert_eq!(m.len(), incident_series(10));
}

/// Through the daemon's state: stuck `CLOSE_WAIT` sockets become incidents, exported.
#[test]
fn scrape_exports_the_daemons_incidents() {
    let mut cw = sock(3, 1, tcp_state::CLOSE_WAIT, 8080, 40001);
    cw.pid = 77;
    let mut s = shared_with(&[(
        1,
        vec![
            sock(1, 1, tcp_state::LISTEN, 8080, 0),
            cw,
            sock(4, 1, tcp_state::CLOSE_WAIT, 8080, 40002),
        ],
    )]);
    evaluate_at(&mut s, 60);
    assert!(s.detectors.open_count() >= 2);
    let m = parse(&encode(&build(&crate::view::View::of(&s), 10).unwrap()).unwrap());
    let open: f64 = m
        .iter()
        .filter(|x| x.0 == "tcpwatch_incidents_open")
        .map(|x| x.2)
        .sum();
    assert_eq!(
        open,
        f64::from(u32::try_from(s.incidents.open_count()).unwrap())
    );
    assert!(open >= 1.0, "no incident for stuck CLOSE_WAIT sockets");
    let top = m.iter().filter(|x| x.0 == "tcpwatch_incident").count();
    assert_eq!(top, s.incidents.open_count().min(10));
    let opened: f64 = m
        .iter()
        .filter(|x| x.0 == "tcpwatch_incidents_opened_total")
        .map(|x| x.2)
        .sum();
    assert!(opened >= open);
}
