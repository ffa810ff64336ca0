//! What each kernel must run: the scenarios of `tcpwatch-vmtest`, and the few a kernel may
//! skip, each with its reason. The summary fails a kernel whose run misses a required
//! scenario, skips one that is not declared optional for it, or runs one nobody declared
//! (a new scenario must be added here, so that it cannot silently stop running).

/// Every scenario the runner has (`tcpwatch-vmtest/src/main.rs`, `run_all`).
pub const SCENARIOS: &[&str] = &[
    "refusal_no_iter",
    "state_tracking",
    "close_wait_owned",
    "accept_queue_and_unaccepted_close_wait",
    "send_q_peer_never_reads",
    "blackholed_peer",
    "fallbacks_reported",
];

/// A kernel's expectations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// Must PASS.
    pub required: Vec<&'static str>,
    /// May SKIP (not FAIL), with the reason.
    pub optional: Vec<(&'static str, &'static str)>,
}

/// Optional scenarios per kernel family (`host`, `5.10`, `6.1`, `6.12`). None today: `nft`
/// and the `nf_tables` modules are in every initramfs, `cargo xtask setup` installs `nft` on
/// the host, so `blackholed_peer` must run everywhere, and 5.10 runs every scenario (its
/// differences are probed fallbacks, checked by `fallbacks_reported`).
const OPTIONAL: &[(&str, &str, &str)] = &[];

/// The kernel family of a `--kernel` value: `host`, `5.10`, `6.1`, `6.12`.
fn family(kernel: &str) -> &str {
    match kernel {
        k if k == "6.12" || k.starts_with("linux-image-6.12.") => "6.12",
        k if k == "6.1" || k.starts_with("linux-image-6.1.") => "6.1",
        k if k == "5.10" || k.starts_with("linux-image-5.10.") => "5.10",
        k => k,
    }
}

pub fn for_kernel(kernel: &str) -> Expectation {
    let fam = family(kernel);
    let optional: Vec<(&'static str, &'static str)> = OPTIONAL
        .iter()
        .filter(|(k, _, _)| *k == fam)
        .map(|&(_, s, why)| (s, why))
        .collect();
    let required = SCENARIOS
        .iter()
        .copied()
        .filter(|s| !optional.iter().any(|(o, _)| o == s))
        .collect();
    Expectation { required, optional }
}

/// Why a run does not meet `exp` (empty when it does). FAIL verdicts are reported by the
/// caller as well; here they count only as "did not pass".
pub fn problems(exp: &Expectation, report: &super::RunReport) -> Vec<String> {
    let mut out = Vec::new();
    let verdict = |name: &str| {
        report
            .scenarios
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.verdict.as_str())
    };
    for name in &exp.required {
        match verdict(name) {
            Some("PASS") => {}
            Some("SKIP") => out.push(format!(
                "{name} was skipped but is required on this kernel (declare it optional with a \
                 reason in xtask/src/vmtest/expect.rs if that is intended)"
            )),
            Some(v) => out.push(format!("{name}: {v}")),
            None => out.push(format!("{name} did not run")),
        }
    }
    for (name, why) in &exp.optional {
        match verdict(name) {
            Some("PASS" | "SKIP") => {}
            Some(v) => out.push(format!("{name}: {v} (optional here: {why})")),
            None => out.push(format!("{name} did not run (optional here: {why})")),
        }
    }
    for s in &report.scenarios {
        if !SCENARIOS.contains(&s.name.as_str()) {
            out.push(format!(
                "{} ran but is not declared in xtask/src/vmtest/expect.rs",
                s.name
            ));
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for s in &report.scenarios {
        if seen.contains(&s.name.as_str()) {
            out.push(format!("{} ran twice", s.name));
        }
        seen.push(&s.name);
    }
    out
}

#[cfg(test)]
#[path = "expect_tests.rs"]
mod tests;
