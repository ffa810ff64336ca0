//! Reading whole maps with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+ for hash maps, 5.7+ for
//! arrays): one `bpf()` call per [`CHUNK`] entries, where aya 0.14 iterates a hash map with two
//! calls per entry (`get_next_key`, then a lookup) and reads arrays one index per call. Under
//! connection churn the LRU maps hold thousands of entries (a reset from each ephemeral port),
//! read at every sweep: the per-entry calls were most of the daemon's fixed cost.
//!
//! A batch walks the hash table bucket by bucket, so, unlike `get_next_key` after an LRU
//! eviction removed the current key, it never restarts from the first entry. Like the
//! per-entry walk, it is not a snapshot: an entry updated meanwhile is read before or after.
use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{Context as _, bail};
use aya::Pod;
use aya::maps::{HashMap, Map, MapData, PerCpuArray, PerCpuHashMap};

/// `BPF_MAP_LOOKUP_BATCH` (`enum bpf_cmd`).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries asked per call. A hash bucket must fit whole (ENOSPC otherwise, then retried with
/// more room); buckets hold a handful of entries.
const CHUNK: usize = 1024;
/// The kernel's `ENOTSUPP` (524): the map type has no batch operations.
const ENOTSUPP: i32 = 524;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Calls `f` with every key of `map` and its value (one per possible CPU for a per-CPU map,
/// else one). Returns `Ok(false)`, having called nothing, when this kernel has no batch
/// lookup for this map: the caller reads it entry by entry instead.
pub fn for_each<K: Pod, V: Pod>(
    map: &Map,
    per_cpu: bool,
    f: impl FnMut(K, &[V]),
) -> anyhow::Result<bool> {
    match data(map) {
        Some(map) => for_each_data(map, per_cpu, f),
        None => Ok(false),
    }
}

/// [`for_each`] on the map's data.
fn for_each_data<K: Pod, V: Pod>(
    map: &MapData,
    per_cpu: bool,
    mut f: impl FnMut(K, &[V]),
) -> anyhow::Result<bool> {
    let cpus = if per_cpu {
        aya::util::nr_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))?
    } else {
        1
    };
    // Per-CPU values are laid out each rounded up to 8 bytes (`bpf_map_value_size`).
    let slot = if per_cpu {
        size_of::<V>().next_multiple_of(8)
    } else {
        size_of::<V>()
    };
    let value_size = slot * cpus;
    let fd = u32::try_from(map.fd().as_fd().as_raw_fd()).context("negative map fd")?;
    let mut chunk = CHUNK;
    let mut keys = vec![0_u8; chunk * size_of::<K>()];
    let mut values = vec![0_u8; chunk * value_size];
    // The batch position: a bucket index for hash maps, a key for arrays (at most 8 bytes).
    let mut token_in = [0_u8; 8];
    let mut token_out = [0_u8; 8];
    let mut first = true;
    let mut one: Vec<V> = Vec::with_capacity(cpus);
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                token_in.as_mut_ptr() as u64
            },
            out_batch: token_out.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(chunk).context("batch size")?,
            map_fd: fd,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: `attr` is the `batch` member of `union bpf_attr` for BPF_MAP_LOOKUP_BATCH;
        // the kernel writes at most `count` keys of the map's key size into `keys`, as many
        // values of its value size into `values` (both that large: `K` and `V` are the map's
        // key and value types), and the position into `token_out` (8 bytes, at least the
        // bucket index or array key it writes); all live across the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let err = if rc < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        };
        match err {
            0 | libc::ENOENT => {}
            libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP if first => return Ok(false),
            libc::ENOSPC if chunk < CHUNK * 64 => {
                // One bucket holds more entries than asked for: ask again with more room.
                chunk *= 4;
                keys.resize(chunk * size_of::<K>(), 0);
                values.resize(chunk * value_size, 0);
                continue;
            }
            _ => bail!(
                "BPF_MAP_LOOKUP_BATCH: {}",
                std::io::Error::from_raw_os_error(err)
            ),
        }
        let n = usize::try_from(attr.count).unwrap_or(0).min(chunk);
        for i in 0..n {
            let k_at = i * size_of::<K>();
            let key_bytes = keys
                .get(k_at..k_at + size_of::<K>())
                .context("batch key out of range")?;
            // SAFETY: `key_bytes` holds exactly one `K` (plain old data), possibly unaligned.
            let key: K = unsafe { std::ptr::read_unaligned(key_bytes.as_ptr().cast()) };
            one.clear();
            for c in 0..cpus {
                let v_at = i * value_size + c * slot;
                let v = values
                    .get(v_at..v_at + size_of::<V>())
                    .context("batch value out of range")?;
                // SAFETY: `v` holds exactly one `V` (plain old data), possibly unaligned.
                one.push(unsafe { std::ptr::read_unaligned(v.as_ptr().cast()) });
            }
            f(key, &one);
        }
        if err == libc::ENOENT {
            return Ok(true);
        }
        token_in = token_out;
        first = false;
    }
}

/// Calls `f` with every key of the per-CPU hash `map` and its per-CPU values: in batches
/// where the kernel allows, else entry by entry.
pub fn for_each_percpu_hash<K: Pod, V: Pod>(
    map: &Map,
    mut f: impl FnMut(K, &[V]),
) -> anyhow::Result<()> {
    if !for_each(map, true, &mut f)? {
        let m: PerCpuHashMap<&MapData, K, V> = PerCpuHashMap::try_from(map)?;
        for entry in &m {
            let (k, vals) = entry?;
            f(k, &vals);
        }
    }
    Ok(())
}

/// Calls `f` with every key of the hash `map` and its value: in batches where the kernel
/// allows, else entry by entry.
pub fn for_each_hash<K: Pod, V: Pod>(map: &Map, mut f: impl FnMut(K, &V)) -> anyhow::Result<()> {
    let batched = for_each(map, false, |k, v: &[V]| {
        if let Some(v) = v.first() {
            f(k, v);
        }
    })?;
    if !batched {
        let m: HashMap<&MapData, K, V> = HashMap::try_from(map)?;
        for entry in &m {
            let (k, v) = entry?;
            f(k, &v);
        }
    }
    Ok(())
}

/// The per-CPU sums of the first `len` slots of a per-CPU `u64` array, in one call where the
/// kernel allows, else one call per slot.
pub fn percpu_sums(map: &Map, len: u32) -> anyhow::Result<Vec<u64>> {
    let mut out = vec![0_u64; usize::try_from(len)?];
    let batched = for_each(map, true, |k: u32, vals: &[u64]| {
        if let Some(slot) = usize::try_from(k).ok().and_then(|i| out.get_mut(i)) {
            *slot = vals.iter().sum();
        }
    })?;
    if !batched {
        let arr: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = arr.get(&u32::try_from(i)?, 0)?.iter().sum();
        }
    }
    Ok(out)
}

/// The map's data, for the map types batches read.
fn data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d) => Some(d),
        _ => None,
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
