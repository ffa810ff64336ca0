use super::*;
use crate::vmtest::parse_output;

fn all_pass() -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    for s in SCENARIOS {
        let _ = writeln!(t, "VMTEST {s} PASS ok");
    }
    t.push_str("VMTEST-DONE\n");
    t
}

#[test]
fn every_kernel_requires_every_scenario_today() {
    for k in [
        "host",
        "5.10",
        "linux-image-5.10.0-46-cloud-amd64-unsigned",
        "6.1",
        "6.12",
        "linux-image-6.12.57+deb12-cloud-amd64",
    ] {
        let e = for_kernel(k);
        assert_eq!(e.required, SCENARIOS, "{k}");
        assert!(e.optional.is_empty());
    }
    assert_eq!(family("linux-image-6.1.0-41-cloud-amd64"), "6.1");
    assert_eq!(family("linux-image-5.10.0-46-cloud-amd64"), "5.10");
    assert_eq!(family("linux-image-6.12.57+deb12-cloud-amd64"), "6.12");
}

#[test]
fn a_full_pass_meets_the_expectation() {
    assert_eq!(
        problems(&for_kernel("6.1"), &parse_output(&all_pass())),
        Vec::<String>::new()
    );
}

#[test]
fn a_skip_fails_unless_declared_optional() {
    let text = all_pass().replace("blackholed_peer PASS ok", "blackholed_peer SKIP no nft");
    let report = parse_output(&text);
    assert!(report.passed(), "the runner's own verdict tolerates SKIP");
    let p = problems(&for_kernel("6.12"), &report);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("blackholed_peer was skipped"), "{p:?}");

    let relaxed = Expectation {
        required: SCENARIOS
            .iter()
            .copied()
            .filter(|s| *s != "blackholed_peer")
            .collect(),
        optional: vec![("blackholed_peer", "no nftables on this kernel")],
    };
    assert!(problems(&relaxed, &report).is_empty());
    let failed = parse_output(&all_pass().replace("blackholed_peer PASS", "blackholed_peer FAIL"));
    assert_eq!(
        problems(&relaxed, &failed).len(),
        1,
        "optional may skip, not fail"
    );
}

#[test]
fn missing_unknown_and_repeated_scenarios_are_problems() {
    let text = all_pass().replace("VMTEST state_tracking PASS ok\n", "")
        + "VMTEST brand_new PASS ok\nVMTEST close_wait_owned PASS again\n";
    let p = problems(&for_kernel("host"), &parse_output(&text));
    assert!(p.iter().any(|m| m == "state_tracking did not run"), "{p:?}");
    assert!(
        p.iter()
            .any(|m| m.starts_with("brand_new ran but is not declared")),
        "{p:?}"
    );
    assert!(p.iter().any(|m| m == "close_wait_owned ran twice"), "{p:?}");
}
