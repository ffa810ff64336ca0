//! Contract test (root): `tcpwatch top`'s own client (`tcpwatch_top::client`) against a real
//! daemon's API and stream. Every body and every stream event top parses into the
//! `tcpwatch_core::api` types must serialize back to exactly the JSON the daemon sent: a field
//! renamed, added or removed on the daemon side (or a type that stops round-tripping) fails
//! here, where top would otherwise drop it silently.
//!
//! Only two presentation fields of each finding in `/api/v1/findings` (`netns_name`,
//! `since_seconds_ago`, added by the daemon for people) are outside the typed contract; they
//! are listed here by name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]
mod support;

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use support::{Daemon, Netns, connect, listener, privileged, wait_for};
use tcpwatch_core::api::{ConnectionsBody, FindingsBody, IncidentsBody, StreamEvent};
use tcpwatch_top::client;

const WAIT: Duration = Duration::from_mins(1);
/// Fields of a finding that `/api/v1/findings` adds for people, outside the typed contract.
const FINDING_EXTRAS: [&str; 2] = ["netns_name", "since_seconds_ago"];

/// The first place where two JSON values differ, as a path (`open[0].subject.local`).
fn first_difference(path: &str, raw: &Value, typed: &Value) -> Option<String> {
    match (raw, typed) {
        (Value::Object(sent), Value::Object(kept)) => {
            for key in sent.keys().chain(kept.keys()) {
                let here = format!("{path}.{key}");
                match (sent.get(key), kept.get(key)) {
                    (Some(x), Some(y)) => {
                        if let Some(diff) = first_difference(&here, x, y) {
                            return Some(diff);
                        }
                    }
                    (Some(x), None) => {
                        return Some(format!("{here}: sent by the daemon ({x}), lost by top"));
                    }
                    (None, Some(y)) => {
                        return Some(format!("{here}: not sent by the daemon, top made up {y}"));
                    }
                    (None, None) => {}
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(&format!("{path}[{i}]"), x, y)),
        _ if raw == typed => None,
        _ => Some(format!(
            "{path}: daemon sent {raw}, top's type gives {typed}"
        )),
    }
}

/// Parses `raw` as top does (into `T`) and checks that `T` serializes back to the same JSON
/// (after `strip` removes documented extras from the daemon's side).
fn round_trip<T: DeserializeOwned + Serialize>(
    what: &str,
    raw: &[u8],
    strip: impl Fn(&mut Value),
) -> Result<T, String> {
    let typed: T =
        serde_json::from_slice(raw).map_err(|e| format!("{what}: top cannot parse it: {e}"))?;
    let mut raw: Value = serde_json::from_slice(raw).map_err(|e| format!("{what}: {e}"))?;
    strip(&mut raw);
    let back = serde_json::to_value(&typed).map_err(|e| format!("{what}: {e}"))?;
    match first_difference(what, &raw, &back) {
        None => Ok(typed),
        Some(d) => Err(d),
    }
}

fn strip_finding_extras(v: &mut Value) {
    for list in ["open", "recently_resolved"] {
        for f in v[list].as_array_mut().into_iter().flatten() {
            let o = f.as_object_mut().unwrap();
            for k in FINDING_EXTRAS {
                assert!(o.remove(k).is_some(), "{k} missing in {f:?}");
            }
        }
    }
}

/// Reads `/api/v1/stream` through top's client on a thread; sends each event's raw data.
fn stream_reader(addr: &str) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let mut sse = client::open_stream(addr).unwrap();
    std::thread::spawn(move || {
        while let Ok(Some(data)) = sse.next_data() {
            if tx.send(data).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn top_client_round_trips_every_body_and_stream_event_losslessly() {
    if !privileged() {
        return;
    }
    let d = Daemon::start(&["detectors.close_wait.threshold_seconds=2"]);
    let t0 = Instant::now();
    let addr = format!("127.0.0.1:{}", d.port);
    let events = stream_reader(&addr);

    // A CLOSE_WAIT leak in a namespace of the test: connection deltas, findings and an
    // incident on the stream and in the bodies.
    let ns = Netns::new("contract");
    let (l, la) = listener(&ns, 16);
    let mut leaked = Vec::new();
    for _ in 0..5 {
        let c = connect(&ns, la);
        leaked.push(l.accept().unwrap().0);
        drop(c);
    }

    // Every stream event until each type was seen (conn, finding, incident) and checked.
    let deadline = Instant::now() + WAIT;
    let mut seen = BTreeSet::new();
    let mut checked = 0;
    while seen.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let data = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("stream: only {seen:?} within {WAIT:?}"));
        let ev: StreamEvent = round_trip("stream event", data.as_bytes(), |_| {})
            .unwrap_or_else(|e| panic!("{e}\nevent: {data}"));
        // Top's own parser gives the same value.
        assert_eq!(
            tcpwatch_top::state::wire::parse_event(&data),
            Ok(ev.clone())
        );
        let kind = serde_json::from_str::<Value>(&data).unwrap()["type"]
            .as_str()
            .unwrap()
            .to_owned();
        if kind != "lagged" {
            seen.insert(kind);
        }
        checked += 1;
    }
    eprintln!(
        "{checked} stream events round-trip; kinds {seen:?} after {:?}",
        t0.elapsed()
    );

    // The bodies, through top's client, once the incident is open.
    let inode = ns.inode.to_string();
    let incidents = wait_for(WAIT, || {
        let raw = client::get(&addr, "/api/v1/incidents").unwrap();
        let v: Value = serde_json::from_slice(&raw).unwrap();
        v["open"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.to_string().contains(&inode))
            .then_some(raw)
    })
    .expect("no open incident about the test namespace");
    let body: IncidentsBody = round_trip("/api/v1/incidents", &incidents, |_| {}).unwrap();
    assert!(!body.open.is_empty());
    eprintln!("incidents after {:?}", t0.elapsed());

    let raw = client::get(&addr, "/api/v1/findings").unwrap();
    let body: FindingsBody = round_trip("/api/v1/findings", &raw, strip_finding_extras).unwrap();
    assert!(!body.open.is_empty(), "no open finding");

    // Only the test's namespace: the daemon serves every namespace of the host, and another
    // one with many sockets (a bench running meanwhile) would make the body too large (507).
    let raw = client::get(
        &addr,
        &format!("/api/v1/connections?netns={}&limit=100000", ns.inode),
    )
    .unwrap();
    let body: ConnectionsBody = round_trip("/api/v1/connections", &raw, |_| {}).unwrap();
    let ours = body
        .connections
        .iter()
        .filter(|c| u64::from(c.netns.inode) == ns.inode)
        .count();
    assert!(ours >= 6, "listener and 5 leaked sockets, got {ours}");
    eprintln!(
        "{} connections round-trip after {:?}",
        body.connections.len(),
        t0.elapsed()
    );

    // The check catches a renamed field: rename one key of the first connection.
    let mut renamed: Value = serde_json::from_slice(&raw).unwrap();
    let first = renamed["connections"][0].as_object_mut().unwrap();
    let key = first.keys().find(|k| *k != "key").unwrap().clone();
    let v = first.remove(&key).unwrap();
    first.insert(format!("{key}_renamed"), v);
    let e = round_trip::<ConnectionsBody>(
        "/api/v1/connections",
        &serde_json::to_vec(&renamed).unwrap(),
        |_| {},
    )
    .unwrap_err();
    assert!(e.contains(&key), "{e}");

    // And top's whole load (the same client and types) sees the namespace.
    let snap = client::load(&addr).unwrap();
    assert!(
        snap.conns
            .iter()
            .any(|c| u64::from(c.netns.inode) == ns.inode)
    );
    assert!(snap.incidents.is_some_and(|i| !i.is_empty()));
    eprintln!("load after {:?}", t0.elapsed());
    drop(leaked);
    drop(l);
}
