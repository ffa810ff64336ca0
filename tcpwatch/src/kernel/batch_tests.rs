//! Batched reads of maps made here, against what was written into them (needs root, as every
//! privileged test: creating BPF maps needs `CAP_BPF`).
#![allow(clippy::unwrap_used, reason = "tests")]
use std::collections::BTreeMap;

use aya::maps::{HashMap as BpfHashMap, IterableMap as _, MapData, PerCpuHashMap, PerCpuValues};

use super::*;

/// More entries than one batch holds, so the walk resumes from its position several times.
const ENTRIES: u64 = 3 * CHUNK as u64 + 17;

#[test]
fn per_cpu_hash_batches_read_every_entry_and_every_cpu_exactly() {
    let cpus = aya::util::nr_cpus().unwrap();
    let mut m: PerCpuHashMap<MapData, u64, [u64; 2]> =
        PerCpuHashMap::create(u32::try_from(ENTRIES).unwrap() + 100, 0).unwrap();
    for k in 0..ENTRIES {
        let per_cpu: Vec<[u64; 2]> = (0..cpus as u64).map(|c| [k * 10 + c, k]).collect();
        m.insert(k, PerCpuValues::try_from(per_cpu).unwrap(), 0)
            .unwrap();
    }
    let mut seen = BTreeMap::new();
    let batched = for_each_data(m.map(), true, |k: u64, vals: &[[u64; 2]]| {
        assert!(
            seen.insert(k, vals.to_vec()).is_none(),
            "key {k} read twice"
        );
    })
    .unwrap();
    assert!(
        batched,
        "this kernel (5.6+) has batch lookups for per-CPU hash maps"
    );
    assert_eq!(seen.len() as u64, ENTRIES);
    for (k, vals) in seen {
        let want: Vec<[u64; 2]> = (0..cpus as u64).map(|c| [k * 10 + c, k]).collect();
        assert_eq!(vals, want, "key {k}");
    }
}

#[test]
fn hash_batches_read_every_entry_and_an_empty_map_reads_nothing() {
    let mut m: BpfHashMap<MapData, u32, [u8; 12]> =
        BpfHashMap::create(u32::try_from(ENTRIES).unwrap(), 0).unwrap();
    let mut none = 0;
    assert!(for_each_data(m.map(), false, |_: u32, _: &[[u8; 12]]| none += 1).unwrap());
    assert_eq!(none, 0);
    for k in 0..u32::try_from(ENTRIES).unwrap() {
        let mut v = [0_u8; 12];
        v[..4].copy_from_slice(&k.to_ne_bytes());
        v[11] = 7;
        m.insert(k, v, 0).unwrap();
    }
    let mut seen = BTreeMap::new();
    assert!(
        for_each_data(m.map(), false, |k: u32, v: &[[u8; 12]]| {
            assert_eq!(v.len(), 1);
            seen.insert(k, v[0]);
        })
        .unwrap()
    );
    assert_eq!(seen.len() as u64, ENTRIES);
    for (k, v) in seen {
        assert_eq!(v[..4], k.to_ne_bytes());
        assert_eq!(v[11], 7);
    }
}
