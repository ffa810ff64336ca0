//! Unit tests of `alerts`: the per-finding alerts (opt-in, `per_finding_alerts = true`), the
//! HTTP side and the sender task (incident alerts: `alerts_incidents_tests.rs`).
use std::collections::BTreeMap;

use tcpwatch_core::incident::IncidentKind;
use tcpwatch_core::model::{ConnKey, NS_PER_SEC, NetnsId, Owner, Severity, TcpState};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

fn finding(kind: FindingKind, severity: Severity, cause: &str) -> Finding {
    Finding {
        id: format!("{}:7:ffff1", kind.name()),
        kind,
        severity,
        subject: Subject::Connection {
            key: ConnKey {
                skaddr: 0xffff1,
                netns_cookie: 7,
            },
            netns: NetnsId {
                cookie: 7,
                inode: 4_026_531_833,
            },
            local: "10.0.0.1:8080".parse().unwrap(),
            remote: "10.0.0.2:5555".parse().unwrap(),
            state: TcpState::CloseWait,
            owner: Some(Owner {
                pid: 12,
                comm: "nginx".into(),
                ..Owner::default()
            }),
        },
        cause: cause.into(),
        diagnosis: "app leaks the socket".into(),
        since: 100 * NS_PER_SEC,
        opened_at: 130 * NS_PER_SEC,
        updated_at: 130 * NS_PER_SEC,
        resolved_at: None,
        evidence: BTreeMap::new(),
        incident_id: None,
        wall: None,
    }
}

/// A sender task with per-finding alerts on.
pub(super) fn task(min: Severity) -> Task {
    Task {
        client: client_for(9093),
        cfg: AlertmanagerConfig {
            min_severity: min,
            per_finding_alerts: true,
            ..AlertmanagerConfig::default()
        },
        node: "node-1".into(),
        counters: Arc::default(),
        open: HashMap::new(),
        pending_resolved: Vec::new(),
        failing: 0,
    }
}

/// A push client to a plain-HTTP Alertmanager on a loopback port.
pub(super) fn client_for(port: u16) -> Client {
    Client::new(&AlertmanagerConfig {
        url: Some(format!("http://127.0.0.1:{port}")),
        ..AlertmanagerConfig::default()
    })
    .unwrap()
}

/// Mono 200 s = wall 2023-11-14T22:13:20Z.
pub(super) fn clocks() -> Clocks {
    Clocks {
        mono: 200 * NS_PER_SEC,
        wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

fn change(change: Lifecycle, f: &Finding) -> AlertChange {
    AlertChange::Finding(Box::new(FindingChange {
        change,
        finding: f.clone(),
    }))
}

#[test]
fn rfc3339_formats_utc() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
        "2023-11-14T22:13:20.123Z"
    );
    for (secs, text) in [
        (951_782_400, "2000-02-29T00:00:00.000Z"),
        (4_107_542_399, "2100-02-28T23:59:59.000Z"),
        (1_709_251_199, "2024-02-29T23:59:59.000Z"),
    ] {
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(secs)), text);
    }
}

#[test]
fn wall_of_maps_mono_to_wall() {
    let wall = UNIX_EPOCH + Duration::from_secs(1000);
    assert_eq!(
        wall_of(50 * NS_PER_SEC, 60 * NS_PER_SEC, wall),
        UNIX_EPOCH + Duration::from_secs(990)
    );
    assert_eq!(
        wall_of(70 * NS_PER_SEC, 60 * NS_PER_SEC, wall),
        UNIX_EPOCH + Duration::from_secs(1010)
    );
    assert_eq!(wall_of(0, 2000 * NS_PER_SEC, wall), UNIX_EPOCH);
}

#[test]
fn endpoint_parsing() {
    let e = Endpoint::parse("http://am.monitoring:9093/").unwrap();
    assert_eq!(
        e,
        Endpoint {
            url: "http://am.monitoring:9093/api/v2/alerts".into(),
            https: false,
        }
    );
    let e = Endpoint::parse("https://am/prefix/am?x=1").unwrap();
    assert_eq!(e.url, "https://am/prefix/am/api/v2/alerts");
    assert!(e.https);
    let e = Endpoint::parse("http://[::1]:9093").unwrap();
    assert_eq!(e.url, "http://[::1]:9093/api/v2/alerts");
    for bad in [
        "http://:9093",
        "http://am:x",
        "ftp://am",
        "am:9093",
        "http://am:0",
    ] {
        let err = Endpoint::parse(bad).unwrap_err();
        assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
    }
    let err = Endpoint::parse("http://u:p@am:9093").unwrap_err();
    assert!(err.contains("basic_auth_user"), "{err}");
    assert!(check_config(&AlertmanagerConfig::default(), true).is_ok());
    let https = AlertmanagerConfig {
        url: Some("https://am:9093".into()),
        ..AlertmanagerConfig::default()
    };
    assert!(check_config(&https, true).is_ok(), "https:// is supported");
}

/// A unique scratch file path.
fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tcpwatch-alerts-{}-{name}", std::process::id()))
}

#[test]
fn unusable_ca_and_secret_files_are_named_without_their_content() {
    let missing = AlertmanagerConfig {
        url: Some("https://am:9093".into()),
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..AlertmanagerConfig::default()
    };
    assert!(
        check_config(&missing, false).is_ok(),
        "files are read only by the commands that push"
    );
    let e = check_config(&missing, true).unwrap_err().to_string();
    assert!(
        e.contains("alertmanager.ca_file /nonexistent/ca.pem: cannot read"),
        "{e}"
    );
    let not_pem = scratch("not-pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let cfg = AlertmanagerConfig {
        ca_file: Some(not_pem.display().to_string()),
        ..missing
    };
    let e = check_config(&cfg, true).unwrap_err().to_string();
    assert!(e.contains("no PEM certificate"), "{e}");
    let _ = std::fs::remove_file(&not_pem);

    let pw = scratch("pw");
    std::fs::write(&pw, "").unwrap();
    let basic = AlertmanagerConfig {
        url: Some("http://am:9093".into()),
        basic_auth_user: Some("u".into()),
        basic_auth_password_file: Some(pw.display().to_string()),
        ..AlertmanagerConfig::default()
    };
    let e = check_config(&basic, true).unwrap_err().to_string();
    assert!(
        e.contains("alertmanager.basic_auth_password_file") && e.contains("empty"),
        "{e}"
    );
    std::fs::write(&pw, "s3cr3t-pw\n").unwrap();
    let c = Client::new(&basic).unwrap();
    assert!(!format!("{c:?}").contains("s3cr3t"), "{c:?}");
    let _ = std::fs::remove_file(&pw);
    let token = AlertmanagerConfig {
        url: Some("http://am:9093".into()),
        bearer_token_file: Some("/nonexistent/token".into()),
        ..AlertmanagerConfig::default()
    };
    let e = check_config(&token, true).unwrap_err().to_string();
    assert!(
        e.contains("alertmanager.bearer_token_file /nonexistent/token"),
        "{e}"
    );
}

#[test]
fn opened_finding_becomes_a_firing_alert() {
    let mut t = task(Severity::Warning);
    let f = finding(FindingKind::CloseWaitStuck, Severity::Warning, "owned");
    let alerts = t.apply(&[change(Lifecycle::Opened, &f)], clocks());
    assert_eq!(alerts.len(), 1);
    assert!(!alerts[0].resolved);
    let a = &alerts[0].alert;
    assert_eq!(
        a["labels"],
        json!({
            "alertname": "TcpwatchFinding", "kind": "close_wait_stuck", "severity": "warning",
            "finding_id": "close_wait_stuck:7:ffff1", "node": "node-1", "cause": "owned",
            "netns": "4026531833", "local": "10.0.0.1:8080", "remote": "10.0.0.2:5555",
        })
    );
    // Opened at mono 130 s = 70 s before now; firing until now + 4 x 60 s.
    assert_eq!(a["startsAt"], "2023-11-14T22:12:10.000Z");
    assert_eq!(a["endsAt"], "2023-11-14T22:17:20.000Z");
    assert_eq!(a["annotations"]["description"], "app leaks the socket");
    assert_eq!(
        a["annotations"]["summary"],
        "close_wait_stuck on node-1: 10.0.0.1:8080 -> 10.0.0.2:5555 (CLOSE_WAIT, nginx[12], netns 4026531833)"
    );
    assert_eq!(
        a["annotations"]["runbook_url"],
        format!("{RUNBOOK_BASE}/TcpwatchCloseWaitStuck.md")
    );
    assert_eq!(t.open.len(), 1);
}

#[test]
fn resolved_finding_ends_the_alert_with_the_same_labels() {
    let mut t = task(Severity::Warning);
    let mut f = finding(FindingKind::CloseWaitStuck, Severity::Warning, "owned");
    let firing = t.apply(&[change(Lifecycle::Opened, &f)], clocks());
    f.resolved_at = Some(195 * NS_PER_SEC);
    let alerts = t.apply(&[change(Lifecycle::Resolved, &f)], clocks());
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].alert["labels"], firing[0].alert["labels"]);
    assert_eq!(alerts[0].alert["startsAt"], "2023-11-14T22:12:10.000Z");
    assert_eq!(alerts[0].alert["endsAt"], "2023-11-14T22:13:15.000Z");
    assert!(alerts[0].resolved);
    assert!(t.open.is_empty());
    // A resolution of a finding never sent (below min_severity) sends nothing.
    let g = finding(FindingKind::AwaitingResponse, Severity::Info, "no_response");
    assert!(
        t.apply(&[change(Lifecycle::Opened, &g)], clocks())
            .is_empty()
    );
    assert!(
        t.apply(&[change(Lifecycle::Resolved, &g)], clocks())
            .is_empty()
    );
}

#[test]
fn severity_change_resolves_the_old_labels() {
    let mut t = task(Severity::Warning);
    let mut f = finding(
        FindingKind::RetransmitChain,
        Severity::Warning,
        "peer_unreachable",
    );
    t.apply(&[change(Lifecycle::Opened, &f)], clocks());
    f.severity = Severity::Critical;
    let alerts = t.apply(&[change(Lifecycle::Updated, &f)], clocks());
    assert_eq!(alerts.len(), 2);
    assert_eq!(alerts[0].alert["labels"]["severity"], "warning");
    assert_eq!(alerts[0].alert["endsAt"], "2023-11-14T22:13:20.000Z");
    assert!(alerts[0].resolved);
    assert_eq!(alerts[1].alert["labels"]["severity"], "critical");
    assert!(!alerts[1].resolved);
    // An update with the same labels is one firing alert.
    let alerts = t.apply(&[change(Lifecycle::Updated, &f)], clocks());
    assert_eq!(alerts.len(), 1);
    // Below min_severity: resolved and forgotten.
    let mut t = task(Severity::Critical);
    t.apply(&[change(Lifecycle::Opened, &f)], clocks());
    f.severity = Severity::Warning;
    let alerts = t.apply(&[change(Lifecycle::Updated, &f)], clocks());
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].resolved);
    assert!(t.open.is_empty());
}

#[test]
fn port_and_listener_subjects_label_what_they_have() {
    let mut f = finding(FindingKind::ResetBurst, Severity::Warning, "sent");
    f.subject = Subject::Port {
        netns: NetnsId {
            cookie: 7,
            inode: 9,
        },
        port: 8080,
    };
    let l = labels(&f, "n");
    assert_eq!(l["port"], "8080");
    assert!(!l.contains_key("local") && !l.contains_key("remote"));
    f.subject = Subject::Listener {
        key: ConnKey {
            skaddr: 1,
            netns_cookie: 7,
        },
        netns: NetnsId {
            cookie: 7,
            inode: 9,
        },
        local: "0.0.0.0:80".parse().unwrap(),
        owner: None,
    };
    let l = labels(&f, "n");
    assert_eq!(l["local"], "0.0.0.0:80");
    assert!(!l.contains_key("remote"));
    assert_eq!(subject_text(&f.subject), "listener 0.0.0.0:80 (netns 9)");
}

#[test]
fn finding_alerts_are_opt_in() {
    let mut t = task(Severity::Info);
    t.cfg.per_finding_alerts = false;
    let f = finding(FindingKind::CloseWaitStuck, Severity::Critical, "owned");
    assert!(
        t.apply(&[change(Lifecycle::Opened, &f)], clocks())
            .is_empty()
    );
    assert!(t.open.is_empty());
}

/// A fake Alertmanager: records one request, answers `status`.
pub(super) async fn fake_am(status: u16) -> (u16, tokio::task::JoinHandle<String>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0_u8; 65_536];
        let mut got = Vec::new();
        loop {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then_some(value.trim())
                    })
                    .unwrap()
                    .parse()
                    .unwrap();
                if body.len() >= len {
                    break;
                }
            }
        }
        let resp = format!("HTTP/1.1 {status} X\r\nContent-Length: 4\r\n\r\nnope");
        s.write_all(resp.as_bytes()).await.unwrap();
        String::from_utf8(got).unwrap()
    });
    (port, h)
}

#[tokio::test]
async fn post_counts_success_and_failure_and_keeps_resolutions() {
    let (port, h) = fake_am(200).await;
    let mut t = task(Severity::Warning);
    t.client = client_for(port);
    let mut f = finding(FindingKind::CloseWaitStuck, Severity::Warning, "owned");
    let alerts = t.apply(&[change(Lifecycle::Opened, &f)], clocks());
    t.post(alerts, false).await;
    let req = h.await.unwrap();
    assert!(req.starts_with("POST /api/v2/alerts HTTP/1.1"), "{req}");
    assert!(
        req.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{req}"
    );
    let body: Value = serde_json::from_str(req.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body[0]["labels"]["alertname"], "TcpwatchFinding");
    assert_eq!(t.counters.sent.load(Ordering::Relaxed), 1);

    // Alertmanager refuses: counted, and the resolution is kept for the next re-send.
    let (port, h) = fake_am(400).await;
    t.client = client_for(port);
    f.resolved_at = Some(199 * NS_PER_SEC);
    let alerts = t.apply(&[change(Lifecycle::Resolved, &f)], clocks());
    t.post(alerts, false).await;
    h.await.unwrap();
    assert_eq!(t.counters.failed.load(Ordering::Relaxed), 1);
    assert_eq!(t.failing, 1);
    assert_eq!(t.pending_resolved.len(), 1);

    // Nothing listens: the re-send fails too, and still keeps the resolution.
    t.client = client_for({
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    t.post(Vec::new(), true).await;
    assert_eq!(t.counters.failed.load(Ordering::Relaxed), 2);
    assert_eq!(t.pending_resolved.len(), 1);

    // Back up: the pending resolution goes out with the re-send.
    let (port, h) = fake_am(200).await;
    t.client = client_for(port);
    t.post(Vec::new(), true).await;
    let req = h.await.unwrap();
    assert!(
        req.contains("\"endsAt\":\"2023-11-14T22:13:19.000Z\""),
        "{req}"
    );
    assert!(t.pending_resolved.is_empty());
    assert_eq!(t.failing, 0);
    assert_eq!(t.counters.sent.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn sender_never_blocks_and_delivers() {
    let (port, h) = fake_am(200).await;
    let cfg = AlertmanagerConfig {
        url: Some(format!("http://127.0.0.1:{port}")),
        ..AlertmanagerConfig::default()
    };
    let s = spawn(&cfg).unwrap();
    let f = finding(
        FindingKind::CloseWaitStuck,
        Severity::Critical,
        "unaccepted",
    );
    let opened = FindingChange {
        change: Lifecycle::Opened,
        finding: f,
    };
    // Per-finding alerts are off by default: only the incident is pushed.
    let i = super::incident_tests::incident(IncidentKind::ListenerNotAccepting, Severity::Critical);
    let ic = IncidentChange {
        change: Lifecycle::Opened,
        incident: i,
    };
    s.send(&[opened], &[ic]);
    let req = h.await.unwrap();
    assert!(req.contains("\"kind\":\"listener_not_accepting\""), "{req}");
    assert!(!req.contains("close_wait_stuck:"), "{req}");
    for _ in 0..100 {
        if s.stats().sent == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.stats(), AlertStats { sent: 1, failed: 0 });
    assert!(spawn(&AlertmanagerConfig::default()).is_none());
}

/// A per-finding alert's finding, for the incident tests.
pub(super) fn finding_for_incident_tests() -> Finding {
    finding(FindingKind::CloseWaitStuck, Severity::Warning, "owned")
}

#[tokio::test]
async fn credentials_are_sent_and_a_refusal_says_what_to_check() {
    let (port, h) = fake_am(401).await;
    let pw = scratch("pw-401");
    std::fs::write(&pw, "hunter2\n").unwrap();
    let c = Client::new(&AlertmanagerConfig {
        url: Some(format!("http://127.0.0.1:{port}")),
        basic_auth_user: Some("tcpwatch".into()),
        basic_auth_password_file: Some(pw.display().to_string()),
        ..AlertmanagerConfig::default()
    })
    .unwrap();
    let e = c.post_json("[]".into()).await.unwrap_err();
    let req = h.await.unwrap().to_ascii_lowercase();
    // base64("tcpwatch:hunter2")
    assert!(
        req.contains("authorization: basic dgnwd2f0y2g6ahvudgvymg=="),
        "{req}"
    );
    assert!(
        e.contains(&format!(
            "POST http://127.0.0.1:{port}/api/v2/alerts answered 401"
        )),
        "{e}"
    );
    assert!(e.contains("basic_auth_password_file"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let _ = std::fs::remove_file(&pw);
}
