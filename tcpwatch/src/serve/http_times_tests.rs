//! Tests of the RFC 3339 wall-clock twins in `/api/v1/connections`, `/api/v1/findings` and the
//! stream (docs/api.md): present on every record, and agreeing with the monotonic values next
//! to them and with the real clocks.
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use futures_util::StreamExt as _;
use tcpwatch_common::tcp_state;
use tcpwatch_core::model::{MonoNs, mono_now};
use tower::ServiceExt as _;

use super::tests::{fixture, get};
use super::*;
use crate::serve::metrics::tests::{evaluate_at, shared_with, sock};

fn parse(v: &serde_json::Value, key: &str) -> SystemTime {
    let s = v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no `{key}` in {v}"));
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("`{key}`={s}: {e}"))
}

fn mono(v: &serde_json::Value, key: &str) -> MonoNs {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no `{key}` in {v}"))
}

/// The twin of monotonic `t` is the wall clock at `t`, read when the body was made (between
/// `before` and `after`): within the millisecond rounding plus the request's duration.
fn assert_twin(
    v: &serde_json::Value,
    mono_key: &str,
    wall_key: &str,
    window: (MonoNs, SystemTime),
) {
    let (mono_at, wall_at) = window;
    let t = mono(v, mono_key);
    let expected = if t <= mono_at {
        wall_at - Duration::from_nanos(mono_at - t)
    } else {
        wall_at + Duration::from_nanos(t - mono_at)
    };
    let got = parse(v, wall_key);
    let diff = got
        .duration_since(expected)
        .unwrap_or_else(|e| e.duration());
    assert!(
        diff < Duration::from_secs(2),
        "{wall_key} off by {diff:?}: {v}"
    );
}

#[tokio::test]
async fn connections_and_findings_carry_wall_clock_twins() {
    let sh = fixture();
    let window = (mono_now(), SystemTime::now());
    let (st, body) = get(&sh, "/api/v1/connections").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 5);
    for c in conns {
        assert_twin(c, "state_since", "state_since_time", window);
        assert_twin(c, "first_seen", "first_seen_time", window);
        assert_twin(c, "last_seen", "last_seen_time", window);
    }
    // top reads the same body back with the twins.
    let typed: tcpwatch_core::api::ConnectionsBody = serde_json::from_str(&body).unwrap();
    assert!(typed.connections.iter().all(|c| c.wall.is_some()));

    let (st, body) = get(&sh, "/api/v1/findings").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let open = v["open"].as_array().unwrap();
    assert!(!open.is_empty(), "{v}");
    for f in open {
        assert_twin(f, "since", "since_time", window);
        assert_twin(f, "opened_at", "opened_time", window);
        assert_twin(f, "updated_at", "updated_time", window);
        assert!(f.get("resolved_time").is_none(), "{f}");
    }
}

#[tokio::test]
async fn stream_events_carry_wall_clock_twins() {
    let s = shared_with(&[(
        1,
        vec![
            sock(1, 1, tcp_state::LISTEN, 8080, 0),
            sock(2, 1, tcp_state::CLOSE_WAIT, 8080, 40000),
        ],
    )]);
    let sh = crate::view::Live::new(s);
    let req = Request::builder()
        .uri("/api/v1/stream")
        .body(Body::empty())
        .unwrap();
    let resp = router(sh.hub().await).oneshot(req).await.unwrap();
    let mut body = resp.into_body().into_data_stream();
    let window = (mono_now(), SystemTime::now());
    evaluate_at(&mut *sh.lock().await, 60);
    let mut finding = None;
    while finding.is_none() {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let text = String::from_utf8(chunk.to_vec()).unwrap();
        for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let ev: serde_json::Value = serde_json::from_str(line).unwrap();
            if ev["type"] == "finding" {
                finding = Some(ev["finding"].clone());
            }
        }
    }
    let f = finding.unwrap();
    assert_twin(&f, "since", "since_time", window);
    assert_twin(&f, "opened_at", "opened_time", window);
}
