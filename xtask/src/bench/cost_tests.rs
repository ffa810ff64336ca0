use super::*;
use crate::bench::report::{DaemonAt, DaemonRate, goals as all_goals};

#[test]
fn busy_ticks_count_user_nice_system_irq_softirq() {
    let stat = "cpu  100 20 30 1000 50 4 6 7 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\n";
    assert_eq!(parse_busy_ticks(stat), Some(100 + 20 + 30 + 4 + 6));
    assert_eq!(parse_busy_ticks("cpu0 1 2 3\n"), None);
    assert_eq!(parse_busy_ticks("cpu  1 2\n"), None);
    assert_eq!(parse_busy_ticks("cpu  1 x 3 4 5 6 7\n"), None);
    assert_eq!(parse_irq_ticks(stat), Some(4 + 6));
    assert_eq!(parse_irq_ticks("cpu  1 2 3 4 5\n"), None);
}

#[test]
fn noise_floor_is_the_relative_median_absolute_deviation() {
    assert_eq!(relative_mad(&[]), None);
    assert_eq!(relative_mad(&[1.0]), None);
    assert_eq!(relative_mad(&[0.0, 0.0]), None);
    // Median 1.0; deviations 0.02 0.01 0 0.01 0.05: median 0.01.
    let r = relative_mad(&[0.98, 1.01, 1.0, 0.99, 1.05]).unwrap();
    assert!((r - 0.01).abs() < 1e-9, "{r}");
    // Relative to the median: median 200, deviations 0 10 10: median 10 -> 5 %.
    let r = relative_mad(&[200.0, 190.0, 210.0]).unwrap();
    assert!((r - 0.05).abs() < 1e-9, "{r}");
    // One outlier does not move it.
    let r = relative_mad(&[1.0, 1.0, 1.0, 1.0, 3.0]).unwrap();
    assert!(r.abs() < 1e-12);
}

fn tool(name: &str, load: &str, rounds: &[(f64, f64)]) -> Overhead {
    let mut o = Overhead {
        tool: name.into(),
        load: load.into(),
        cpu_unit: if load == "churn" {
            "1000 connections".into()
        } else {
            "GiB".into()
        },
        ..Overhead::default()
    };
    for &(without, with) in rounds {
        o.push_cpu(CpuRound {
            without,
            with,
            tool: Some(0.001),
            scoped: Some((without / 2.0, with / 2.0)),
        });
    }
    o
}

fn find<'a>(g: &'a [Goal], part: &str) -> &'a Goal {
    g.iter()
        .find(|x| x.name.contains(part))
        .unwrap_or_else(|| panic!("no goal `{part}` in {g:?}"))
}

#[test]
fn cpu_ratio_is_the_median_of_per_round_ratios() {
    let o = tool(
        "tcpwatch daemon",
        "churn",
        &[(0.100, 0.101), (0.200, 0.206), (0.100, 0.099)],
    );
    let r: Vec<String> = o.cpu_ratios.iter().map(|x| format!("{x:.3}")).collect();
    assert_eq!(r, ["1.010", "1.030", "0.990"]);
    assert!((o.cpu_median_ratio().unwrap() - 1.01).abs() < 1e-9);
    // Deviations from 1.01: 0, 0.02, 0.02 -> 0.02 / 1.01.
    assert!((o.cpu_noise_floor().unwrap() - 0.02 / 1.01).abs() < 1e-9);
    assert_eq!(o.tool_cpu.len(), 3);
}

#[test]
fn cpu_goals_pass_within_two_percent_and_a_quiet_method() {
    let mut r = Results::default();
    let quiet = [(0.100, 0.101), (0.100, 0.1015), (0.100, 0.1005)];
    r.overhead.push(tool("tcpwatch daemon", "churn", &quiet));
    r.overhead
        .push(tool("ss -tani every 1 s", "churn", &[(0.1, 0.12); 3]));
    r.overhead.push(tool(
        "bpftrace tcpstates+tcpretrans",
        "churn",
        &[(0.1, 0.15); 3],
    ));
    let mut g = Vec::new();
    goals(&r, &mut g);
    assert_eq!(find(&g, "churn: host CPU per").pass, Some(true));
    assert!(find(&g, "churn: host CPU per").value.starts_with("101.0 %"));
    assert_eq!(find(&g, "churn: CPU-cost method noise").pass, Some(true));
    assert_eq!(find(&g, "churn: host CPU added").pass, Some(true));
    assert_eq!(find(&g, "really ran").pass, Some(true));
    // Bulk not measured: no verdict.
    assert_eq!(find(&g, "bulk: host CPU per").pass, None);
    assert_eq!(find(&g, "bulk: host CPU added").pass, None);
}

#[test]
fn cpu_goals_fail_when_missed_noisy_or_a_peer_does_not_run() {
    let mut r = Results::default();
    let noisy = [(0.1, 0.103), (0.1, 0.12), (0.1, 0.095), (0.1, 0.104)];
    r.overhead.push(tool("tcpwatch daemon", "churn", &noisy));
    r.overhead
        .push(tool("ss -tani every 1 s", "churn", &[(0.1, 0.102); 3]));
    r.overhead.push(Overhead {
        not_run: Some("not ready within 20 s".into()),
        ..tool("bpftrace tcpstates+tcpretrans", "churn", &[])
    });
    let mut g = Vec::new();
    goals(&r, &mut g);
    let added = find(&g, "churn: host CPU per");
    assert_eq!(added.pass, Some(false), "{added:?}");
    assert_eq!(find(&g, "churn: CPU-cost method noise").pass, Some(false));
    let peers = find(&g, "churn: host CPU added");
    assert_eq!(peers.pass, Some(false), "{peers:?}");
    assert!(peers.bound.contains("not lower than: ss -tani every 1 s"));
    assert!(peers.bound.contains("within it of tcpwatch: ss -tani"));
    let ran = find(&g, "really ran");
    assert_eq!(ran.pass, Some(false));
    assert!(
        ran.value
            .contains("bpftrace tcpstates+tcpretrans: not ready within 20 s")
    );
    // One round: no noise floor.
    let mut one = Results::default();
    one.overhead
        .push(tool("tcpwatch daemon", "churn", &[(0.1, 0.1)]));
    let mut g = Vec::new();
    goals(&one, &mut g);
    assert_eq!(find(&g, "churn: CPU-cost method noise").pass, None);
    assert_eq!(find(&g, "churn: host CPU per").pass, Some(true));
}

#[test]
fn daemon_goals_use_the_issue_limits() {
    let mut r = Results::default();
    // The row nearest 10 000/s by the daemon's count is judged, whatever the load aimed at.
    r.daemon_rate.push(DaemonRate {
        target_per_s: 1_000.0,
        achieved_per_s: 30_000.0,
        cpu_pct: 0.1,
        ..DaemonRate::default()
    });
    r.daemon_rate.push(DaemonRate {
        target_per_s: 10_000.0,
        achieved_per_s: 9_000.0,
        hook_runs_per_s: Some(10_100.0),
        cpu_pct: 1.2,
        ..DaemonRate::default()
    });
    r.daemon_idle.push(DaemonAt {
        sockets: 100_000,
        tracked: 100_010.0,
        rss_mib: 100.0,
        cpu_pct: 4.0,
        sweep_interval_s: 1.0,
        steady_sweep_ms: 40.0,
    });
    let g = all_goals(&r);
    let rate = find(&g, "state changes/s");
    assert!(rate.name.contains("load aimed at 10000/s"), "{rate:?}");
    assert_eq!(rate.pass, Some(false), "1.2 % > 1 %");
    assert!(
        rate.value.contains("9000 state changes/s counted"),
        "{rate:?}"
    );
    assert!(rate.value.contains("10100 runs/s"), "{rate:?}");
    let idle = find(&g, "idle connections with 1 s sweeps");
    assert_eq!(idle.pass, Some(true));
    assert!(
        idle.bound
            .contains("40.0 ms of daemon CPU per sweep interval")
    );
    assert_eq!(find(&g, "RSS <= 96 MiB").pass, Some(false));
    r.daemon_rate[1].cpu_pct = 0.9;
    r.daemon_idle[0].cpu_pct = 5.5;
    r.daemon_idle[0].rss_mib = 90.0;
    let g = all_goals(&r);
    assert_eq!(find(&g, "state changes/s").pass, Some(true));
    assert_eq!(
        find(&g, "idle connections with 1 s sweeps").pass,
        Some(false)
    );
    assert_eq!(find(&g, "RSS <= 96 MiB").pass, Some(true));
}

#[test]
fn cpu_table_lists_tools_that_ran() {
    let mut r = Results {
        rounds: 3,
        churn_conns: 50_000,
        bulk_bytes: 4 << 30,
        ..Results::default()
    };
    r.overhead.push(tool(
        "tcpwatch daemon",
        "churn",
        &[(0.1, 0.101), (0.1, 0.102), (0.1, 0.1)],
    ));
    r.overhead.push(Overhead {
        not_run: Some("x".into()),
        ..tool("bcc tcpstates+tcpretrans", "churn", &[])
    });
    let mut s = String::new();
    table(&r, &mut s);
    assert!(
        s.contains("50000 connections of churn, 4.00 GiB of bulk"),
        "{s}"
    );
    assert!(
        s.contains(
            "| tcpwatch daemon | churn | 100.0 ms/1000 connections | 101.0 ms/1000 connections \
             | 101.0 % | 1.010 1.020 1.000 | 1.0 % | 1.0 ms/1000 connections | 101.0 % (1.0 %) |"
        ),
        "{s}"
    );
    assert!(!s.contains("bcc"));
}

#[test]
fn gauge_reads_only_the_exact_unlabelled_series() {
    let body = "# HELP tcpwatch_sweep_duration_seconds Duration of the last sweep.\n\
                # TYPE tcpwatch_sweep_duration_seconds gauge\n\
                tcpwatch_sweep_duration_seconds_total 9\n\
                tcpwatch_sweep_duration_seconds 0.0425\n";
    assert_eq!(
        crate::bench::report::gauge(body, "tcpwatch_sweep_duration_seconds"),
        Some(0.0425)
    );
    assert_eq!(
        crate::bench::report::gauge(body, "tcpwatch_sweep_sockets"),
        None
    );
}
