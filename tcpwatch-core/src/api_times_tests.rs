//! Tests of `api_times`: every time twin, from an injected wall clock.
use std::collections::BTreeMap;

use super::*;
use crate::model::{ConnKey, FindingKind, MonoNs, NetnsId, Sample, Severity, Subject, TcpState};

const S: MonoNs = 1_000_000_000;

/// Monotonic 1000 s is 2026-12-01T00:00:00Z.
fn wall() -> WallClock {
    WallClock::at(1000 * S, 1_796_083_200 * 1_000_000_000)
}

fn conn() -> ConnRecord {
    let mut c = ConnRecord::new(
        ConnKey {
            skaddr: 7,
            netns_cookie: 1,
        },
        NetnsId {
            cookie: 1,
            inode: 4_026_531_833,
        },
        "10.0.0.1:40000".parse().unwrap(),
        "10.0.0.2:443".parse().unwrap(),
        TcpState::Established,
        940 * S,
    );
    c.first_seen = 900 * S;
    c.last_seen = 1000 * S + S / 2;
    c
}

fn finding() -> Finding {
    Finding {
        id: "f1".into(),
        kind: FindingKind::ALL[0],
        severity: Severity::Warning,
        subject: Subject::Connection {
            key: ConnKey {
                skaddr: 7,
                netns_cookie: 1,
            },
            netns: NetnsId {
                cookie: 1,
                inode: 4_026_531_833,
            },
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:443".parse().unwrap(),
            state: TcpState::Established,
            owner: None,
        },
        cause: "owned".into(),
        diagnosis: "d".into(),
        since: 880 * S,
        opened_at: 910 * S,
        updated_at: 1000 * S,
        resolved_at: None,
        evidence: BTreeMap::new(),
        incident_id: None,
        wall: None,
    }
}

fn keys_without_twins(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !k.ends_with("_time") && k != "history_times");
    }
    v
}

#[test]
fn connection_times_have_rfc3339_twins() {
    let mut c = conn();
    c.retrans.chain_start = Some(990 * S);
    c.retrans.last_retrans = Some(999 * S);
    c.history = vec![
        Sample {
            at: 995 * S,
            ..Sample::default()
        },
        Sample {
            at: 1000 * S,
            ..Sample::default()
        },
    ];
    let before = serde_json::to_value(&c).unwrap();
    c.fill_wall_times(&wall());
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["state_since"], 940 * S);
    assert_eq!(v["state_since_time"], "2026-11-30T23:59:00.000Z");
    assert_eq!(v["first_seen_time"], "2026-11-30T23:58:20.000Z");
    assert_eq!(v["last_seen_time"], "2026-12-01T00:00:00.500Z");
    assert_eq!(v["retrans_chain_start_time"], "2026-11-30T23:59:50.000Z");
    assert_eq!(v["retrans_last_time"], "2026-11-30T23:59:59.000Z");
    assert_eq!(
        v["history_times"],
        serde_json::json!(["2026-11-30T23:59:55.000Z", "2026-12-01T00:00:00.000Z"])
    );
    // Only fields are added: without the twins the body is what it was.
    assert_eq!(keys_without_twins(&v), before);
    // Top reads the same type back, twins included.
    let back: ConnRecord = serde_json::from_value(v).unwrap();
    assert_eq!(back, c);
}

#[test]
fn unset_times_have_no_twin_and_table_records_none() {
    let mut c = conn();
    let plain = serde_json::to_value(&c).unwrap();
    assert!(plain.get("state_since_time").is_none(), "{plain}");
    let back: ConnRecord = serde_json::from_value(plain).unwrap();
    assert_eq!(back.wall, None, "a body without twins reads as none");
    c.fill_wall_times(&wall());
    let v = serde_json::to_value(&c).unwrap();
    for absent in [
        "retrans_chain_start_time",
        "retrans_last_time",
        "history_times",
    ] {
        assert!(v.get(absent).is_none(), "{absent} in {v}");
    }
}

#[test]
fn finding_times_have_rfc3339_twins() {
    let mut f = finding();
    let before = serde_json::to_value(&f).unwrap();
    f.fill_wall_times(&wall());
    let v = serde_json::to_value(&f).unwrap();
    assert_eq!(v["since_time"], "2026-11-30T23:58:00.000Z");
    assert_eq!(v["opened_time"], "2026-11-30T23:58:30.000Z");
    assert_eq!(v["updated_time"], "2026-12-01T00:00:00.000Z");
    assert!(v.get("resolved_time").is_none(), "{v}");
    assert_eq!(keys_without_twins(&v), before);
    f.resolved_at = Some(1001 * S);
    f.fill_wall_times(&wall());
    let v = serde_json::to_value(&f).unwrap();
    assert_eq!(v["resolved_time"], "2026-12-01T00:00:01.000Z");
    let back: Finding = serde_json::from_value(v).unwrap();
    assert_eq!(back, f);
}

#[test]
fn bodies_and_stream_events_are_filled() {
    let w = wall();
    let mut body = ConnectionsBody {
        connections: vec![conn(), conn()],
    };
    body.fill_wall_times(&w);
    assert!(body.connections.iter().all(|c| c.wall.is_some()));
    let mut fb = FindingsBody {
        open: vec![finding()],
        recently_resolved: vec![finding()],
    };
    fb.fill_wall_times(&w);
    assert!(
        fb.open
            .iter()
            .chain(&fb.recently_resolved)
            .all(|f| f.wall.is_some())
    );

    let mut up = StreamEvent::Conn(Delta::Upsert {
        conn: Box::new(conn()),
    });
    up.fill_wall_times(&w);
    let v = serde_json::to_value(&up).unwrap();
    assert_eq!(v["type"], "conn");
    assert_eq!(
        v["conn"]["state_since_time"], "2026-11-30T23:59:00.000Z",
        "{v}"
    );

    let mut fc = StreamEvent::Finding(Box::new(crate::model::FindingChange {
        change: crate::model::Lifecycle::Opened,
        finding: finding(),
    }));
    fc.fill_wall_times(&w);
    let v = serde_json::to_value(&fc).unwrap();
    assert_eq!(
        v["finding"]["opened_time"], "2026-11-30T23:58:30.000Z",
        "{v}"
    );

    let mut rm = StreamEvent::Conn(Delta::Remove { key: conn().key });
    let before = rm.clone();
    rm.fill_wall_times(&w);
    assert_eq!(rm, before);
}
