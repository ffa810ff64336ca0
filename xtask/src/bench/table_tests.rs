use super::*;
use crate::bench::report::{Overhead, ProgCost, goals};

fn cost(program: &str, events: u64, ns: u64) -> ProgCost {
    ProgCost {
        program: program.into(),
        load: "churn".into(),
        events,
        run_time_ns: ns * events,
        #[expect(clippy::cast_precision_loss, reason = "test figures")]
        ns_per_event: ns as f64,
        recursion_misses: 0,
    }
}

#[test]
fn a_full_run_writes_reference_noise_floor_and_keeps_the_notes() {
    let mut r = Results {
        mode: "full".into(),
        rounds: 3,
        churn_conns: 50_000,
        bulk_bytes: 4 << 30,
        ..Results::default()
    };
    r.kernel.push(cost("tp_inet_sock_set_state", 1000, 140));
    r.reference.push(cost("inet_sock_set_state", 1000, 70));
    let mut o = Overhead {
        tool: "tcpwatch daemon".into(),
        load: "churn".into(),
        unit: "conn/s".into(),
        cpu_unit: "1000 connections".into(),
        ..Overhead::default()
    };
    for (w0, w1) in [(0.1, 0.101), (0.1, 0.102), (0.1, 0.1)] {
        o.without.push(1000.0);
        o.with.push(990.0);
        o.ratios.push(0.99);
        o.push_cpu(crate::bench::cost::CpuRound {
            without: w0,
            with: w1,
            tool: None,
            scoped: None,
        });
    }
    r.overhead.push(o);
    r.goals = goals(&r);
    let old = format!(
        "# Performance\n\nold generated table\n\n{NOTES_MARKER}\n\n## A hand-written note\n\nkept.\n"
    );
    let md = with_kept_notes(&r, &old);
    assert!(!md.contains("old generated table"));
    assert!(md.ends_with(&format!(
        "{NOTES_MARKER}\n\n## A hand-written note\n\nkept.\n"
    )));
    assert_eq!(md.matches(NOTES_MARKER).count(), 1);
    assert!(md.contains("| reference: count on inet_sock_set_state | churn | 1000 | 70 | 1 | 0 |"));
    assert!(md.contains("| tp_inet_sock_set_state | churn | 1000 | 140 | 2.00 | 0 |"));
    assert!(md.contains("50000 churn connections, then 4.00 GiB of bulk"));
    assert!(
        md.contains("| 101.0 % | 1.010 1.020 1.000 | 1.0 % |"),
        "{md}"
    );
    assert!(md.contains("| churn: CPU-cost method noise floor < 3.0 % | 1.0 % | PASS |"));
    // No notes in the old file: the tables alone.
    assert_eq!(with_kept_notes(&r, "no marker"), markdown(&r));
}
