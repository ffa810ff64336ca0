//! Skipping quiet ports changes nothing: over random histories of reset counters (ports
//! appearing, bursting, going quiet, evicted and recreated lower), the detector with the skip
//! opens and resolves exactly the findings of the one that samples every port every time.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]
use crate::config::DetectorConfig;
use crate::detect::testutil::{Harness, NETNS};
use crate::model::{FindingKind, ResetCounts};
use crate::test_rng::Rng;

/// One evaluation's changes, in a fixed order (the two harnesses' maps iterate differently).
fn changes(h: &mut Harness, t: f64) -> Vec<String> {
    let mut v: Vec<String> = h
        .step_kind(t, &[], FindingKind::ResetBurst)
        .iter()
        .map(|c| {
            format!(
                "{:?} {} {:?} {}",
                c.change, c.finding.id, c.finding.since, c.finding.diagnosis
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn quiet_port_skip_equals_sampling_every_port() {
    let mut skipped_somewhere = false;
    for seed in 1..=40_u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut cfg = DetectorConfig::default();
        cfg.reset_burst.min_resets = 1 + rng.below_u32(20);
        cfg.reset_burst.window_seconds = 1.0 + f64::from(rng.below_u32(20));
        let mut fast = Harness::new(cfg.clone());
        let mut full = Harness::new(cfg);
        full.det.resets.skip_quiet = false;
        let mut t = 0.0;
        for step in 0..300 {
            t += 0.2 + f64::from(rng.below_u32(30)) / 10.0;
            let ports = 1 + rng.below(12);
            for _ in 0..rng.below(6) {
                let port = 1000 + u16::try_from(rng.below(ports)).unwrap();
                let key = (NETNS.cookie, port);
                let c = full.resets.get(&key).copied().unwrap_or_default();
                let next = match rng.below(10) {
                    // Evicted from the kernel's LRU map.
                    0 => None,
                    // Recreated lower (the counter went backwards).
                    1 => Some(ResetCounts {
                        sent: rng.below_u32(3),
                        received: 0,
                    }),
                    // A burst on one side or both.
                    _ => Some(ResetCounts {
                        sent: c.sent + rng.below_u32(8),
                        received: c.received + rng.below_u32(4),
                    }),
                };
                for h in [&mut fast, &mut full] {
                    match next {
                        Some(v) => h.resets.insert(key, v),
                        None => h.resets.remove(&key),
                    };
                }
            }
            let (a, b) = (changes(&mut fast, t), changes(&mut full, t));
            assert_eq!(a, b, "seed {seed}, step {step}, t {t}");
            let open = |h: &Harness| {
                let mut v: Vec<String> = h
                    .open_of(FindingKind::ResetBurst)
                    .iter()
                    .map(|f| format!("{} {:?} {}", f.id, f.since, f.diagnosis))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(open(&fast), open(&full), "seed {seed}, step {step}");
            skipped_somewhere |= fast
                .det
                .resets
                .ports
                .values()
                .map(|p| p.samples.len())
                .sum::<usize>()
                < full
                    .det
                    .resets
                    .ports
                    .values()
                    .map(|p| p.samples.len())
                    .sum::<usize>();
        }
    }
    assert!(skipped_somewhere, "the histories never made a port quiet");
}
