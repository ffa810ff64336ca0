#![allow(clippy::unwrap_used, reason = "tests")]
use super::*;

const S: u64 = NS_PER_SEC;
const INTERVAL: u64 = 2 * S;

fn set(v: &[u64]) -> HashSet<u64> {
    v.iter().copied().collect()
}

#[test]
fn new_inodes_are_scanned_at_most_once_per_interval() {
    let mut p = OwnerScanPlan::new(INTERVAL);
    assert_eq!(p.plan(&set(&[]), 0, false), None, "nothing wanted, no scan");
    let r = p.plan(&set(&[1]), 0, false).unwrap();
    assert_eq!(r.required, set(&[1]));
    p.scanned(&r, 0, |_| true);
    assert_eq!(p.plan(&set(&[2]), S, false), None, "within the interval");
    let r = p.plan(&set(&[2]), INTERVAL, false).unwrap();
    assert_eq!(
        r.required,
        set(&[2]),
        "a new inode waits one interval at most"
    );
    assert_eq!(p.waiting(), 0);
}

#[test]
fn missed_inodes_back_off_doubling_up_to_the_cap() {
    let mut p = OwnerScanPlan::new(INTERVAL);
    let wanted = set(&[7]);
    let mut now = 0;
    let mut scans = Vec::new();
    // A sweep every second for 5 minutes; inode 7's owner is never found.
    while now <= 300 * S {
        if let Some(r) = p.plan(&wanted, now, false) {
            p.scanned(&r, now, |_| false);
            scans.push(now / S);
        }
        now += S;
    }
    assert_eq!(
        &scans[..6],
        &[0, 4, 12, 28, 60, 120],
        "4, 8, 16, 32, then 60 s"
    );
    assert_eq!(&scans[6..], &[180, 240, 300], "capped at 60 s");
    // 9 scans in 5 minutes instead of 151 (one per 2 s interval).
    assert_eq!(p.waiting(), 1);
}

#[test]
fn a_new_inode_is_not_delayed_by_a_missed_one_and_sees_it_opportunistically() {
    let mut p = OwnerScanPlan::new(INTERVAL);
    let r = p.plan(&set(&[7]), 0, false).unwrap();
    p.scanned(&r, 0, |_| false);
    assert_eq!(p.plan(&set(&[7]), INTERVAL, false), None, "7 not due yet");
    let r = p.plan(&set(&[7, 8]), INTERVAL, false).unwrap();
    assert_eq!(
        (r.required, r.opportunistic.clone()),
        (set(&[8]), set(&[7]))
    );
    // The scan for 8 happened to see 7's owner: 7 no longer waits.
    p.scanned(
        &ScanRequest {
            required: set(&[8]),
            opportunistic: set(&[7]),
        },
        INTERVAL,
        |_| true,
    );
    assert_eq!(p.waiting(), 0);
}

#[test]
fn force_scans_everything_and_gone_inodes_are_forgotten() {
    let mut p = OwnerScanPlan::new(INTERVAL);
    let r = p.plan(&set(&[7, 9]), 0, false).unwrap();
    p.scanned(&r, 0, |_| false);
    assert_eq!(p.waiting(), 2);
    let r = p.plan(&set(&[7, 9]), 1, true).unwrap();
    assert_eq!(
        r.required,
        set(&[7, 9]),
        "forced: interval and backoff ignored"
    );
    // 9's socket is gone (or its owner found elsewhere): no longer waiting.
    assert_eq!(p.plan(&set(&[7]), 2, false), None);
    assert_eq!(p.waiting(), 1);
}

#[test]
fn a_missed_inode_found_later_starts_over_if_missed_again() {
    let mut p = OwnerScanPlan::new(INTERVAL);
    let r = p.plan(&set(&[7]), 0, false).unwrap();
    p.scanned(&r, 0, |_| false);
    let r = p.plan(&set(&[7]), 4 * S, false).unwrap();
    p.scanned(&r, 4 * S, |_| true);
    assert_eq!(p.waiting(), 0);
    // Revalidation dropped its owner later: it is new again, looked up promptly.
    let r = p.plan(&set(&[7]), 6 * S, false).unwrap();
    assert_eq!(r.required, set(&[7]));
    p.scanned(&r, 6 * S, |_| false);
    assert_eq!(p.plan(&set(&[7]), 9 * S, false), None, "first backoff: 4 s");
    assert!(p.plan(&set(&[7]), 10 * S, false).is_some());
}
