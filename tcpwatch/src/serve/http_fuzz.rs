//! Fuzzing of the HTTP API's query parsing through the real router: the committed corpus of
//! hostile URIs first, then random query strings. The property: every answer is 200, 400 or
//! 404 with a non-empty reason, never a panic or a 500.
use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use tcpwatch_common::tcp_state;
use tower::ServiceExt as _;

use super::router;
use crate::serve::metrics::tests::{evaluate_at, shared_with, sock};
use crate::view::Live;

const CORPUS: &str = include_str!("../../fuzz-corpus/api-queries.txt");

fn fixture() -> Live {
    let mut s = shared_with(&[(
        1,
        vec![
            sock(1, 1, tcp_state::LISTEN, 8080, 0),
            sock(2, 1, tcp_state::CLOSE_WAIT, 8080, 40000),
        ],
    )]);
    evaluate_at(&mut s, 60);
    Live::new(s)
}

fn status_of(shared: &Live, uri: &str) -> Option<(StatusCode, String)> {
    // An URI the HTTP layer itself refuses never reaches the API: nothing to check.
    let req = Request::builder().uri(uri).body(Body::empty()).ok()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let resp = router(shared.hub().await).oneshot(req).await.ok()?;
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.ok()?;
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    })
}

fn check(shared: &Live, uri: &str) {
    if uri.contains("/stream") && !uri.contains('?') {
        return; // an endless SSE stream: not a query-parsing case
    }
    if let Some((status, body)) = status_of(shared, uri) {
        assert!(
            [
                StatusCode::OK,
                StatusCode::BAD_REQUEST,
                StatusCode::NOT_FOUND
            ]
            .contains(&status),
            "{uri} -> {status}: {body}"
        );
        if status != StatusCode::OK {
            assert!(!body.trim().is_empty(), "{uri}: an error says why");
        }
    }
}

#[test]
fn corpus_gets_clear_answers() {
    let shared = fixture();
    let mut n = 0;
    for uri in CORPUS.lines().filter(|l| !l.trim().is_empty()) {
        check(&shared, uri);
        n += 1;
    }
    assert!(n > 20);
    // Spot checks: a bad value is a 400 naming the parameter.
    let (st, body) = status_of(&shared, "/api/v1/connections?port=65536").unwrap();
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(body.contains("port"), "{body}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    #[test]
    fn random_queries_never_panic(
        path in prop::sample::select(vec!["/api/v1/connections", "/api/v1/findings", "/api/v1/incidents", "/metrics", "/readyz"]),
        name in prop::sample::select(vec!["state", "port", "netns", "owner", "flagged", "limit", "kind", "severity", "x", ""]),
        value in "[ -~]{0,30}",
        extra in "[a-z%=&0-9]{0,20}",
    ) {
        let shared = fixture();
        let enc = value.bytes().fold(String::new(), |mut acc, b| {
            let _ = std::fmt::Write::write_fmt(&mut acc, format_args!("%{b:02X}"));
            acc
        });
        check(&shared, &format!("{path}?{name}={enc}&{extra}"));
    }
}
