//! The reference the kernel-cost goals compare with: a bpftrace program that only counts, on
//! each hook tcpwatch uses, loaded by the bench itself in the same run and under the same load
//! as tcpwatch's programs (both run for every event). Goals, per tcpwatch program and load:
//! at most 2x the reference on its hook, and at most 150 ns/event.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use super::peers::{Ready, spawn_ready};
use super::report::{Goal, ProgCost, Results};
use super::sys::{self, ChildGuard, ProgStat};

/// At most this many times the reference's ns/event.
pub const MAX_RATIO: f64 = 2.0;
/// At most this many ns/event.
pub const MAX_NS: f64 = 150.0;

/// The tracepoints tcpwatch's programs hook: (category, name).
const HOOKS: [(&str, &str); 4] = [
    ("sock", "inet_sock_set_state"),
    ("tcp", "tcp_retransmit_skb"),
    ("tcp", "tcp_send_reset"),
    ("tcp", "tcp_receive_reset"),
];

/// The hook of one of tcpwatch's programs (None: the `iter/tcp` sweep, which has no event hook).
pub fn hook_of(program: &str) -> Option<&'static str> {
    HOOKS.iter().map(|(_, h)| *h).find(|h| program.contains(h))
}

/// The counting program, running; stopped on drop.
pub struct Reference {
    _guard: ChildGuard,
    /// Program id -> tracepoint.
    pub ids: BTreeMap<u64, String>,
}

impl Reference {
    /// Loads one counting program per hook this kernel has, and waits until all are attached.
    pub fn start() -> Result<Self> {
        let hooks: Vec<&str> = HOOKS
            .iter()
            .filter(|(cat, name)| tracepoint_exists(cat, name))
            .map(|(_, name)| *name)
            .collect();
        if hooks.is_empty() {
            bail!("none of the hooks' tracepoints is listed in tracefs");
        }
        let script = script(&hooks);
        let mut cmd = Command::new("bpftrace");
        cmd.args(["-B", "full", "-e", &script]);
        let guard = spawn_ready(cmd, "bpftrace reference", Ready::Attached(&hooks))?;
        let ids = sys::perf_attachments()?
            .into_iter()
            .filter(|a| a.pid == guard.pid())
            .map(|a| (a.prog_id, a.tracepoint))
            .collect();
        Ok(Self { _guard: guard, ids })
    }

    /// The reference's statistics now, by program id.
    pub fn stats(&self) -> Result<BTreeMap<u64, ProgStat>> {
        Ok(sys::bpftool_progs()?
            .into_iter()
            .filter(|p| self.ids.contains_key(&p.id))
            .map(|p| (p.id, p))
            .collect())
    }

    /// Records the reference's cost over a load (program = the hook's tracepoint).
    pub fn record(
        &self,
        load: &str,
        before: &BTreeMap<u64, ProgStat>,
        after: &BTreeMap<u64, ProgStat>,
        out: &mut Vec<ProgCost>,
    ) {
        for (id, a) in after {
            let program = self.ids.get(id).cloned().unwrap_or_default();
            out.push(cost(program, load, before.get(id), a));
        }
    }
}

/// One program's cost over a load: the difference of its kernel statistics between two
/// readings (`before` None: the program was loaded during the load).
pub fn cost(program: String, load: &str, before: Option<&ProgStat>, after: &ProgStat) -> ProgCost {
    let events = after.run_cnt - before.map_or(0, |b| b.run_cnt);
    let time = after.run_time_ns - before.map_or(0, |b| b.run_time_ns);
    ProgCost {
        program,
        load: load.to_owned(),
        events,
        run_time_ns: time,
        ns_per_event: per_event(time, events),
        recursion_misses: after.recursion_misses - before.map_or(0, |b| b.recursion_misses),
    }
}

pub fn per_event(time_ns: u64, events: u64) -> f64 {
    if events == 0 {
        0.0
    } else {
        time_ns as f64 / events as f64
    }
}

/// `tracepoint:CAT:NAME { @cN = count(); }` for each hook.
fn script(hooks: &[&str]) -> String {
    let mut s = String::new();
    for (i, h) in hooks.iter().enumerate() {
        let cat = HOOKS
            .iter()
            .find(|(_, n)| n == h)
            .map_or("tcp", |(c, _)| *c);
        let _ = writeln!(s, "tracepoint:{cat}:{h} {{ @c{i} = count(); }}");
    }
    s
}

fn tracepoint_exists(cat: &str, name: &str) -> bool {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|root| Path::new(&format!("{root}/events/{cat}/{name}")).exists())
}

/// The reference's cost on `hook` under `load` (None: not measured or no events).
fn reference_for<'a>(r: &'a Results, hook: &str, load: &str) -> Option<&'a ProgCost> {
    r.reference
        .iter()
        .find(|c| c.program == hook && c.load == load && c.events > 0)
}

/// Per tcpwatch program and load: ratio to the reference and ns/event, as goals.
pub fn goals(r: &Results, g: &mut Vec<Goal>) {
    for p in r
        .kernel
        .iter()
        .filter(|p| !p.program.starts_with("bpftrace"))
    {
        let hook = hook_of(&p.program);
        let reference = hook.and_then(|h| reference_for(r, h, &p.load));
        let measured = p.events > 0;
        let ratio = reference
            .filter(|_| measured)
            .map(|c| p.ns_per_event / c.ns_per_event.max(1e-9));
        g.push(Goal {
            name: format!(
                "kernel: {} ({}) <= {MAX_RATIO}x a program that only counts on its hook",
                p.program, p.load
            ),
            value: match (measured, reference) {
                (false, _) => "no events".into(),
                (true, Some(c)) => format!(
                    "{:.0} ns vs {:.0} ns: ratio {:.2}",
                    p.ns_per_event,
                    c.ns_per_event,
                    ratio.unwrap_or(0.0)
                ),
                (true, None) if hook.is_none() => {
                    format!("{:.0} ns; no event hook (iter/tcp)", p.ns_per_event)
                }
                (true, None) => format!("{:.0} ns; reference not measured", p.ns_per_event),
            },
            pass: ratio.map(|x| x <= MAX_RATIO),
            bound: reference.map_or_else(
                || {
                    hook.map_or(
                        "no event hook (iter/tcp): no counting reference".into(),
                        |h| format!("no reference events on {h} under this load"),
                    )
                },
                |c| {
                    format!(
                        "reference: bpftrace `tracepoint:..:{} {{ @c = count(); }}`, {} events \
                         in the same window; {} recursion misses of the tcpwatch program",
                        c.program, c.events, p.recursion_misses
                    )
                },
            ),
        });
        g.push(Goal {
            name: format!("kernel: {} ({}) <= {MAX_NS} ns/event", p.program, p.load),
            value: if measured {
                format!("{:.0} ns ({} events)", p.ns_per_event, p.events)
            } else {
                "no events".into()
            },
            pass: measured.then_some(p.ns_per_event <= MAX_NS),
            bound: "bpf_stats timing of the program alone (two clock reads per run included)"
                .into(),
        });
    }
}

/// The reference rows of the kernel-cost table.
pub fn rows(r: &Results, s: &mut String) {
    for c in &r.reference {
        let _ = writeln!(
            s,
            "| reference: count on {} | {} | {} | {:.0} | 1 | {} |",
            c.program, c.load, c.events, c.ns_per_event, c.recursion_misses
        );
    }
}

/// A tcpwatch program's ratio to the reference on its hook under the same load, as text.
pub fn ratio_text(r: &Results, p: &ProgCost) -> String {
    hook_of(&p.program)
        .and_then(|h| reference_for(r, h, &p.load))
        .filter(|_| p.events > 0)
        .map_or("-".into(), |c| {
            format!("{:.2}", p.ns_per_event / c.ns_per_event.max(1e-9))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(program: &str, load: &str, events: u64, ns: f64) -> ProgCost {
        ProgCost {
            program: program.into(),
            load: load.into(),
            events,
            #[expect(clippy::cast_possible_truncation, reason = "test figures")]
            #[expect(clippy::cast_sign_loss, reason = "test figures")]
            run_time_ns: (ns * events as f64) as u64,
            ns_per_event: ns,
            recursion_misses: 0,
        }
    }

    #[test]
    fn hooks_and_script() {
        assert_eq!(
            hook_of("tp_inet_sock_set_state"),
            Some("inet_sock_set_state")
        );
        assert_eq!(
            hook_of("raw_inet_sock_set_state"),
            Some("inet_sock_set_state")
        );
        assert_eq!(hook_of("tp_tcp_send_reset_reason"), Some("tcp_send_reset"));
        assert_eq!(hook_of("raw_tcp_receive_reset"), Some("tcp_receive_reset"));
        assert_eq!(hook_of("tcpwatch_sweep"), None);
        assert_eq!(
            script(&["inet_sock_set_state", "tcp_send_reset"]),
            "tracepoint:sock:inet_sock_set_state { @c0 = count(); }\n\
             tracepoint:tcp:tcp_send_reset { @c1 = count(); }\n"
        );
    }

    #[test]
    fn goals_compare_with_the_reference_of_the_same_hook_and_load() {
        let mut r = Results::default();
        r.kernel
            .push(cost("tp_inet_sock_set_state", "churn", 100, 139.0));
        r.kernel
            .push(cost("raw_inet_sock_set_state", "churn", 100, 300.0));
        r.kernel
            .push(cost("tp_tcp_retransmit_skb", "churn", 0, 0.0));
        r.kernel.push(cost("tcpwatch_sweep", "churn", 10, 90.0));
        r.kernel
            .push(cost("bpftrace inet_sock_set_s", "churn", 10, 900.0));
        r.reference
            .push(cost("inet_sock_set_state", "churn", 100, 70.0));
        let mut g = Vec::new();
        goals(&r, &mut g);
        let pass = |name: &str| g.iter().find(|x| x.name.starts_with(name)).unwrap().pass;
        assert_eq!(
            pass("kernel: tp_inet_sock_set_state (churn) <= 2x"),
            Some(true)
        );
        assert_eq!(
            pass("kernel: tp_inet_sock_set_state (churn) <= 150"),
            Some(true)
        );
        assert_eq!(
            pass("kernel: raw_inet_sock_set_state (churn) <= 2x"),
            Some(false)
        );
        assert_eq!(
            pass("kernel: raw_inet_sock_set_state (churn) <= 150"),
            Some(false)
        );
        assert_eq!(pass("kernel: tp_tcp_retransmit_skb (churn) <= 2x"), None);
        assert_eq!(pass("kernel: tcpwatch_sweep (churn) <= 2x"), None);
        assert_eq!(pass("kernel: tcpwatch_sweep (churn) <= 150"), Some(true));
        assert!(!g.iter().any(|x| x.name.contains("bpftrace")));
        assert_eq!(g.len(), 8);
        assert_eq!(ratio_text(&r, &r.kernel[0]), "1.99");
        assert_eq!(ratio_text(&r, &r.kernel[3]), "-");
    }
}
