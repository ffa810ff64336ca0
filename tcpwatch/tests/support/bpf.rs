//! The kernel's own view of a process's BPF objects, for tests that check the daemon's
//! figures against it: object ids from `/proc/PID/fdinfo`, and `bpftool`'s JSON.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One program's figures as `bpftool prog show` reports them: (run count, run time ns,
/// recursion misses); bpftool omits a key when it is 0.
pub type Figures = (u64, u64, u64);

/// BPF object ids (`prog_id:` or `map_id:`) a process holds, from `/proc/PID/fdinfo`.
pub fn fdinfo_ids(pid: u32, key: &str) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(e.path()) {
            ids.extend(
                text.lines()
                    .filter_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok()),
            );
        }
    }
    ids
}

/// `bpftool ARGS -j`'s output.
pub fn bpftool(args: &[&str]) -> Value {
    serde_json::from_str(&super::run("bpftool", args)).unwrap()
}

/// The programs process `pid` holds: id -> (15-character kernel name, figures).
pub fn programs(pid: u32) -> BTreeMap<u64, (String, Figures)> {
    let ids = fdinfo_ids(pid, "prog_id:");
    bpftool(&["prog", "show", "-j"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| ids.contains(&p["id"].as_u64().unwrap()))
        .map(|p| {
            let n = |k: &str| p[k].as_u64().unwrap_or(0);
            (
                p["id"].as_u64().unwrap(),
                (
                    p["name"].as_str().unwrap().to_owned(),
                    (n("run_cnt"), n("run_time_ns"), n("recursion_misses")),
                ),
            )
        })
        .collect()
}
