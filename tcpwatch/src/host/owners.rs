//! Socket inode -> owning process, by scanning `/proc/PID/fd`. Incremental: a scan runs only
//! when the table has socket inodes with no known owner, at most once per interval, and stops
//! as soon as every wanted inode is found. An inode a scan missed is retried with a backoff
//! (`tcpwatch_core::owner_scan`), not every interval: it no longer keeps scans going. Results
//! are cached until the socket goes away, and re-checked a bounded number per sweep (one
//! `readlink` each): a process that exited, whose pid was reused, or that handed the socket to
//! another process and closed its descriptor is no longer shown as the owner; the socket is
//! looked up again.
use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tcpwatch_core::model::MonoNs;
use tcpwatch_core::owner_scan::OwnerScanPlan;

use tcpwatch_core::k8s::parse_cgroup;
use tcpwatch_core::model::{Owner, PodRef};

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct OwnerStats {
    pub scans: u64,
    pub fds_read: u64,
    pub last_scan_ms: u64,
    /// Cached owners re-checked, and of those found no longer holding the socket.
    pub revalidated: u64,
    pub owners_gone: u64,
    /// Inodes a scan missed, waiting for a retry (scans do not run for them meanwhile).
    pub retry_waiting: u64,
}

pub struct OwnerIndex {
    /// Shared with the table's records (one allocation per socket, not two). Ordered: the
    /// round-robin re-check reads its next few inodes without sorting them all.
    by_inode: BTreeMap<u64, Arc<Owner>>,
    plan: OwnerScanPlan,
    /// Round-robin position of [`OwnerIndex::revalidate`] (the last inode checked).
    cursor: u64,
    /// The table's removal count at the last [`OwnerIndex::retain_after`] that retained, and
    /// the calls since.
    retained_at: Option<u64>,
    since_retain: u32,
    pub stats: OwnerStats,
}

/// [`OwnerIndex::retain_after`] drops owners of inodes gone from the table at least this often
/// (in sweeps), even when no record left it.
pub const RETAIN_EVERY: u32 = 30;

impl OwnerIndex {
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            by_inode: BTreeMap::new(),
            plan: OwnerScanPlan::new(u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX)),
            cursor: 0,
            retained_at: None,
            since_retain: 0,
            stats: OwnerStats::default(),
        }
    }

    #[must_use]
    pub fn get(&self, inode: u64) -> Option<Arc<Owner>> {
        self.by_inode.get(&inode).cloned()
    }

    /// Drops cached owners of inodes no longer in use.
    pub fn retain(&mut self, live: &HashSet<u64>) {
        self.by_inode.retain(|ino, _| live.contains(ino));
    }

    /// [`OwnerIndex::retain`] with the inodes `live` gives, when records left the table since
    /// the last time (`removals`: the table's count of records removed or replaced), or every
    /// [`RETAIN_EVERY`] calls (an inode that changed in place): not at every sweep of an idle
    /// table.
    pub fn retain_after(&mut self, removals: u64, live: impl FnOnce() -> HashSet<u64>) {
        self.since_retain += 1;
        if self.retained_at == Some(removals) && self.since_retain < RETAIN_EVERY {
            return;
        }
        self.retain(&live());
        self.retained_at = Some(removals);
        self.since_retain = 0;
    }

    /// Re-checks up to `budget` cached owners, round robin: an owner whose process no longer
    /// holds the socket at that descriptor is dropped. Returns the dropped inodes (their owner
    /// must be looked up again).
    pub fn revalidate(&mut self, budget: usize) -> Vec<u64> {
        let picked: Vec<u64> = self
            .by_inode
            .range((Bound::Excluded(self.cursor), Bound::Unbounded))
            .chain(self.by_inode.range(..=self.cursor))
            .map(|(ino, _)| *ino)
            .take(budget)
            .collect();
        if let Some(&last) = picked.last() {
            self.cursor = last;
        }
        self.stats.revalidated += picked.len() as u64;
        let gone: Vec<u64> = picked
            .into_iter()
            .filter(|ino| {
                self.by_inode
                    .get(ino)
                    .is_some_and(|o| !still_holds(o, *ino))
            })
            .collect();
        for ino in &gone {
            self.by_inode.remove(ino);
        }
        self.stats.owners_gone += gone.len() as u64;
        gone
    }

    /// Scans `/proc` for the `wanted` inodes at `now` if the interval and the missed inodes'
    /// backoff allow (or `force`).
    pub fn refresh(&mut self, wanted: &HashSet<u64>, force: bool, now: MonoNs) {
        let wanted: HashSet<u64> = wanted
            .iter()
            .filter(|i| !self.by_inode.contains_key(i))
            .copied()
            .collect();
        let req = self.plan.plan(&wanted, now, force);
        if let Some(req) = req {
            self.scan(req.required.clone(), req.opportunistic.clone());
            self.plan
                .scanned(&req, now, |i| self.by_inode.contains_key(&i));
        }
        self.stats.retry_waiting = self.plan.waiting() as u64;
    }

    /// Reads `/proc/*/fd` until every `required` inode is found; `extra` inodes are taken too
    /// when seen on the way.
    fn scan(&mut self, required: HashSet<u64>, mut extra: HashSet<u64>) {
        let t0 = Instant::now();
        self.stats.scans += 1;
        let mut remaining = required;
        let Ok(proc_dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in proc_dir.flatten() {
            if remaining.is_empty() {
                break;
            }
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            let mut proc_info: Option<(String, Option<String>, Option<PodRef>)> = None;
            for fd in fds.flatten() {
                self.stats.fds_read += 1;
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let Some(inode) = socket_inode(&target.to_string_lossy()) else {
                    continue;
                };
                if !remaining.remove(&inode) && !extra.remove(&inode) {
                    continue;
                }
                let (comm, container_id, pod) = proc_info.get_or_insert_with(|| {
                    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|s| s.trim_end().to_owned())
                        .unwrap_or_default();
                    let (cg, pod) = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                        .map(|s| container_and_pod(&s))
                        .unwrap_or_default();
                    (comm, cg, pod)
                });
                self.by_inode.insert(
                    inode,
                    Arc::new(Owner {
                        pid,
                        comm: comm.clone(),
                        fd: fd.file_name().to_str().and_then(|s| s.parse().ok()),
                        container_id: container_id.clone(),
                        pod: pod.clone(),
                    }),
                );
            }
        }
        self.stats.last_scan_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
    }
}

/// Whether `o` still holds socket `inode` at its descriptor.
fn still_holds(o: &Owner, inode: u64) -> bool {
    let Some(fd) = o.fd else {
        return std::path::Path::new(&format!("/proc/{}", o.pid)).exists();
    };
    std::fs::read_link(format!("/proc/{}/fd/{fd}", o.pid))
        .is_ok_and(|t| socket_inode(&t.to_string_lossy()) == Some(inode))
}

/// `socket:[12345]` -> 12345.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The container id and pod in a `/proc/PID/cgroup` file (docker, containerd, CRI-O; cgroup
/// v1 and v2; see [`parse_cgroup`]). The pod is known by UID only: its name and namespace come
/// from the API server later (`crate::host::k8s::PodIndex`).
#[must_use]
pub fn container_and_pod(cgroup: &str) -> (Option<String>, Option<PodRef>) {
    parse_cgroup(cgroup).map_or((None, None), |ids| {
        let pod = ids.pod_uid.map(|uid| PodRef {
            uid,
            ..PodRef::default()
        });
        (Some(ids.container_id), pod)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn socket_links_are_parsed() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    #[test]
    fn container_ids_from_real_cgroup_formats() {
        let uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let v2_containerd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope\n",
            uid.replace('-', "_")
        );
        let v2_crio = format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n");
        let v2_docker = format!("0::/system.slice/docker-{ID}.scope\n");
        let v1_docker = format!("12:pids:/docker/{ID}\n11:cpu:/docker/{ID}\n");
        let v1_kube = format!("4:memory:/kubepods/burstable/pod{uid}/{ID}\n");
        for s in [&v2_containerd, &v2_crio, &v2_docker, &v1_docker, &v1_kube] {
            assert_eq!(container_and_pod(s).0.as_deref(), Some(ID), "{s}");
        }
        for s in [&v2_containerd, &v1_kube] {
            let pod = container_and_pod(s).1.unwrap();
            assert_eq!((pod.uid.as_str(), pod.name.as_str()), (uid, ""), "{s}");
        }
        // `pod1` is no UID: container known, pod not.
        assert_eq!(container_and_pod(&v2_crio).1, None);
        assert_eq!(container_and_pod(&v2_docker).1, None);
        assert_eq!(
            container_and_pod("0::/user.slice/user-0.slice/session-1.scope\n"),
            (None, None)
        );
        assert_eq!(container_and_pod("0::/\n"), (None, None));
    }

    #[test]
    fn finds_own_socket_owner() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let inode = socket_inode(&link.to_string_lossy()).unwrap();
        let mut idx = OwnerIndex::new(Duration::from_mins(1));
        idx.refresh(&HashSet::from([inode]), true, 0);
        let owner = idx.get(inode).unwrap();
        assert_eq!(owner.pid, std::process::id());
        assert_eq!(owner.fd, Some(fd));
        // Within the interval a second scan is skipped; found inodes are never rescanned.
        idx.refresh(&HashSet::from([inode, 1]), false, 1);
        assert_eq!(idx.stats.scans, 1);
    }

    #[test]
    fn missed_inode_is_retried_with_a_backoff_not_every_interval() {
        const S: u64 = 1_000_000_000;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let inode = socket_inode(&link.to_string_lossy()).unwrap();
        let mut idx = OwnerIndex::new(Duration::from_secs(2));
        // No process holds inode 1: the full scan misses it.
        idx.refresh(&HashSet::from([1]), false, 0);
        assert_eq!((idx.stats.scans, idx.stats.retry_waiting), (1, 1));
        idx.refresh(&HashSet::from([1]), false, 2 * S);
        assert_eq!(
            idx.stats.scans, 1,
            "interval passed, retry not due: no scan"
        );
        // A new inode is still looked up after one interval, and 1 stays waiting.
        idx.refresh(&HashSet::from([1, inode]), false, 2 * S);
        assert_eq!(idx.stats.scans, 2);
        assert_eq!(idx.get(inode).unwrap().fd, Some(fd));
        idx.refresh(&HashSet::from([1]), false, 4 * S);
        assert_eq!(
            (idx.stats.scans, idx.stats.retry_waiting),
            (3, 1),
            "retry due"
        );
        drop(l);
    }

    #[test]
    fn owner_that_no_longer_holds_the_socket_is_dropped_and_found_again() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&l);
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
        let inode = socket_inode(&link.to_string_lossy()).unwrap();
        let mut idx = OwnerIndex::new(Duration::ZERO);
        idx.refresh(&HashSet::from([inode]), true, 0);
        assert!(idx.revalidate(10).is_empty(), "still held");
        // Handed on: another descriptor holds it, the first one is closed.
        let moved = l.try_clone().unwrap();
        drop(l);
        assert_eq!(idx.revalidate(10), vec![inode]);
        assert!(idx.get(inode).is_none());
        idx.refresh(&HashSet::from([inode]), true, 1);
        let fd2 = std::os::fd::AsRawFd::as_raw_fd(&moved);
        assert_eq!(idx.get(inode).unwrap().fd, Some(fd2));
        assert_eq!((idx.stats.revalidated, idx.stats.owners_gone), (2, 1));
    }
}
