//! The seed incidents of `shared/docs/incidents.md` as incidents: the examples shown in
//! `docs/incidents.md` are produced here, and the test checks that the document shows exactly
//! what the code says.
#![allow(clippy::unwrap_used, reason = "tests")]
use super::testkit::{
    NS1, NS2, backlog, book, ctx, cw_owned, cw_unaccepted, resets, s, step, upstream,
};
use super::{Incident, IncidentBook};
use crate::model::{Finding, FindingKind};

const DOC: &str = include_str!("../../../docs/incidents.md");

fn at(mut f: Finding, since: f64) -> Finding {
    f.since = s(since);
    f
}

/// The incidents open after one update of these findings at `s(0)`.
fn incidents(fs: &[Finding], c: &super::IncidentContext) -> (IncidentBook, Vec<Incident>) {
    let mut b = book();
    step(&mut b, 0.0, fs, c);
    let v = b.open().cloned().collect();
    (b, v)
}

fn seed_1() -> Vec<Incident> {
    let r = "10.0.0.5:443";
    let c = ctx(&[(NS1, 8080, Some((42, "api")), 0, 128)]);
    let mut fs = Vec::new();
    for (i, lport) in [40000u16, 40001, 40002].into_iter().enumerate() {
        let since = -35.0 + 5.0 * f64::from(u8::try_from(i).unwrap());
        fs.push(at(
            upstream(
                FindingKind::RetransmitChain,
                "peer_unreachable",
                NS1,
                42,
                "api",
                lport,
                r,
            ),
            since,
        ));
    }
    fs.push(at(
        upstream(
            FindingKind::SendQueueGrowing,
            "peer_unreachable",
            NS1,
            42,
            "api",
            40000,
            r,
        ),
        -30.0,
    ));
    fs.extend((0..20u16).map(|p| {
        at(
            cw_owned(NS1, 42, "api", 8080, 7000 + p),
            -31.0 + f64::from(p),
        )
    }));
    // The unrelated problem in another namespace.
    fs.push(at(cw_owned(NS2, 310, "cron", 40100, 443), -95.0));
    incidents(&fs, &c).1
}

fn seed_2() -> Vec<Incident> {
    let c = ctx(&[(NS1, 8080, Some((77, "server")), 513, 512)]);
    let mut fs = vec![at(
        backlog(NS1, 8080, Some((77, "server")), "overflowing"),
        -240.0,
    )];
    fs.extend((0..198u16).map(|p| {
        at(
            cw_unaccepted(NS1, 8080, 30000 + p),
            -133.0 + f64::from(p % 60),
        )
    }));
    incidents(&fs, &c).1
}

fn seed_3() -> Vec<Incident> {
    let r = "10.0.0.7:443";
    let fs = vec![
        at(
            upstream(
                FindingKind::SendQueueGrowing,
                "peer_unreachable",
                NS1,
                31,
                "orders",
                52000,
                r,
            ),
            -48.0,
        ),
        at(
            upstream(
                FindingKind::RetransmitChain,
                "peer_unreachable",
                NS1,
                31,
                "orders",
                52000,
                r,
            ),
            -47.0,
        ),
    ];
    incidents(&fs, &ctx(&[])).1
}

fn seed_4() -> Vec<Incident> {
    let r = "10.0.0.2:8080";
    let fs: Vec<_> = (0..3u16)
        .map(|i| {
            at(
                upstream(
                    FindingKind::AwaitingResponse,
                    "no_response",
                    NS1,
                    9,
                    "fasthttp",
                    41000 + i,
                    r,
                ),
                -300.0 + f64::from(i),
            )
        })
        .collect();
    incidents(&fs, &ctx(&[])).1
}

fn seed_5() -> Vec<Incident> {
    let c = ctx(&[(NS1, 8080, Some((77, "server")), 0, 128)]);
    let mut f = at(resets(NS1, 8080, "sent"), -10.0);
    f.diagnosis = "reset burst on :8080 (listener server[77], netns 4026531833): 40 RST sent and 2 received \
                   in the last 10s; this side is refusing or aborting connections (nothing listening, app \
                   closing with unread data or SO_LINGER 0, or a full backlog)"
        .to_owned();
    incidents(&[f], &c).1
}

fn assert_documented(incs: &[Incident]) {
    for i in incs {
        let line = format!(
            "- `{}` ({}, {}): {}",
            i.id,
            i.kind.name(),
            i.severity.name(),
            i.diagnosis
        );
        assert!(DOC.contains(&line), "docs/incidents.md lacks:\n{line}");
        if let Some(c) = &i.consequence {
            let line = format!("  consequence: {c}");
            assert!(DOC.contains(&line), "docs/incidents.md lacks:\n{line}");
        }
    }
}

#[test]
fn seed_incidents_read_as_documented() {
    let all = [seed_1(), seed_2(), seed_3(), seed_4(), seed_5()];
    assert_eq!(
        all.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 1, 1, 1, 1]
    );
    for incs in &all {
        assert_documented(incs);
    }
}
