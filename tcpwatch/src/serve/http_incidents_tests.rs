//! Tests of `/api/v1/incidents`, the incident ids of findings, the core body contract, the
//! incident counts of `/api/v1/status` and incident events on the stream; `/api/v1/exposure`.
use axum::body::Body;
use axum::extract::Request;
use futures_util::StreamExt as _;
use tcpwatch_common::tcp_state;
use tcpwatch_core::api::{ConnectionsBody, FindingsBody, IncidentsBody};
use tower::ServiceExt as _;

use super::tests::{fixture, get};
use super::*;
use crate::serve::metrics::tests::{evaluate_at, shared_with, sock};
use crate::view::Live;

async fn json(shared: &Live, uri: &str) -> serde_json::Value {
    let (st, body) = get(shared, uri).await;
    assert_eq!(st, StatusCode::OK, "{uri}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn incidents_are_listed_and_filtered_and_findings_point_at_them() {
    let sh = fixture();
    let body: IncidentsBody = serde_json::from_value(json(&sh, "/api/v1/incidents").await).unwrap();
    assert_eq!(body.open.len(), 1, "{body:?}");
    assert!(body.recently_resolved.is_empty());
    let inc = &body.open[0];
    assert_eq!(inc.members_total, 1);
    assert_eq!(inc.root.local_port, Some(8080));
    assert_eq!(
        body.open,
        sh.lock()
            .await
            .incidents
            .open()
            .cloned()
            .collect::<Vec<_>>()
    );

    let kind = inc.kind.name();
    let sev = inc.severity.name();
    let v = json(
        &sh,
        &format!("/api/v1/incidents?kind={kind}&severity={sev}"),
    )
    .await;
    assert_eq!(v["open"].as_array().unwrap().len(), 1);
    let other = if kind == "reset_storm" {
        "close_wait_leak"
    } else {
        "reset_storm"
    };
    let v = json(&sh, &format!("/api/v1/incidents?kind={other}")).await;
    assert!(v["open"].as_array().unwrap().is_empty());

    let findings: FindingsBody =
        serde_json::from_value(json(&sh, "/api/v1/findings").await).unwrap();
    assert_eq!(findings.open.len(), 1);
    assert_eq!(
        findings.open[0].incident_id.as_deref(),
        Some(inc.id.as_str())
    );
}

#[tokio::test]
async fn incident_filters_name_the_bad_parameter() {
    let sh = fixture();
    for (uri, name, hint) in [
        (
            "/api/v1/incidents?kind=close_wait_stuck",
            "`kind`",
            "listener_not_accepting",
        ),
        ("/api/v1/incidents?severity=loud", "`severity`", "critical"),
        ("/api/v1/incidents?limit=1", "`limit`", "kind, severity"),
        (
            "/api/v1/incidents?kind=reset_storm&kind=reset_storm",
            "`kind`",
            "more than once",
        ),
    ] {
        let (st, body) = get(&sh, uri).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body.contains(name) && body.contains(hint), "{uri}: {body}");
    }
    let (st, body) = get(&sh, "/api/v1/nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(body.contains("/api/v1/incidents"), "{body}");
}

#[tokio::test]
async fn bodies_follow_the_core_contract() {
    let sh = fixture();
    let conns: ConnectionsBody =
        serde_json::from_value(json(&sh, "/api/v1/connections").await).unwrap();
    assert_eq!(conns.connections.len(), 5);
    // The findings keep their two extra fields for people; clients parse the core type.
    let v = json(&sh, "/api/v1/findings").await;
    assert_eq!(v["open"][0]["netns_name"], "blue");
    let mut f: FindingsBody = serde_json::from_value(v).unwrap();
    // The API adds the wall-clock twins (checked in http_times_tests.rs); the rest is the state's.
    for got in &mut f.open {
        assert!(got.wall.take().is_some(), "{got:?}");
    }
    let s = sh.lock().await;
    let mut want: Vec<_> = s.detectors.open().cloned().collect();
    for w in &mut want {
        w.incident_id = s.incidents.incident_of(&w.id).map(str::to_owned);
    }
    assert_eq!(f.open, want);
}

#[tokio::test]
async fn status_counts_incidents() {
    let sh = fixture();
    let v = json(&sh, "/api/v1/status").await;
    let s = sh.lock().await;
    let kind = s.incidents.open().next().unwrap().kind.name();
    assert_eq!(v["incidents"]["open"], 1);
    assert_eq!(v["incidents"]["open_by_kind"][kind], 1);
    assert_eq!(v["incidents"]["open_by_kind"].as_object().unwrap().len(), 6);
    assert_eq!(v["incidents"]["overflowed"], 0);
    assert_eq!(v["incidents"]["opened_total"], 1);
    assert_eq!(v["findings_open"], 1);
}

/// One evaluation sends the finding (with its incident id) and then the incident it opened.
#[tokio::test]
async fn stream_sends_incident_changes_after_their_findings() {
    let s = shared_with(&[(
        1,
        vec![
            sock(1, 1, tcp_state::LISTEN, 8080, 0),
            sock(2, 1, tcp_state::CLOSE_WAIT, 8080, 40000),
        ],
    )]);
    let sh = Live::new(s);
    let req = Request::builder()
        .uri("/api/v1/stream")
        .body(Body::empty())
        .unwrap();
    let resp = router(sh.hub().await).oneshot(req).await.unwrap();
    let mut body = resp.into_body().into_data_stream();
    evaluate_at(&mut *sh.lock().await, 60);
    let mut events = Vec::new();
    while events.len() < 2 {
        let chunk = body.next().await.unwrap().unwrap();
        let text = String::from_utf8(chunk.to_vec()).unwrap();
        for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let ev: StreamEvent = serde_json::from_str(line).unwrap();
            events.push(ev);
        }
    }
    let (StreamEvent::Finding(f), StreamEvent::Incident(i)) = (&events[0], &events[1]) else {
        panic!("{events:?}");
    };
    assert_eq!(
        f.finding.incident_id.as_deref(),
        Some(i.incident.id.as_str())
    );
    assert_eq!(i.change, tcpwatch_core::model::Lifecycle::Opened);
    assert!(i.incident.members.contains(&f.finding.id));
}

/// `GET /api/v1/exposure`: the audit of the table, narrowed by the connection filters.
#[tokio::test]
async fn exposure_audits_the_table_with_the_connection_filters() {
    let shared = fixture();
    let (status, body) = get(&shared, "/api/v1/exposure").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let all: tcpwatch_core::api::ExposureBody = serde_json::from_str(&body).unwrap();
    // Three ESTABLISHED sockets, idle, no keepalive: all would wait forever.
    assert_eq!((all.connections, all.never, all.exposed), (3, 3, 3));
    assert_eq!(all.threshold_seconds, 300);
    let (_, body) = get(&shared, "/api/v1/exposure?port=443").await;
    let some: tcpwatch_core::api::ExposureBody = serde_json::from_str(&body).unwrap();
    assert_eq!(some.connections, 2);
    assert_eq!(some.groups.len(), 1);
    let (status, body) = get(&shared, "/api/v1/exposure?port=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}
