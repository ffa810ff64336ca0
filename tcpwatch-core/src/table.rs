//! The connection table: one [`ConnRecord`] per TCP socket, merged from state events (fast,
//! from the ring buffer) and sweeps (complete, from `iter/tcp` in each namespace).
//!
//! Rules:
//! - A state event creates or updates its socket's record; CLOSE removes it.
//! - A sweep of a namespace updates every socket it lists and removes the records of that
//!   namespace it does not list, unless an event touched them after the sweep started (the
//!   socket is newer than the sweep). This repairs lost events: no ghosts, no missing sockets.
//! - The table is bounded: past `max_connections`, records are evicted by
//!   [`ConnTable::enforce_bound`] (minisockets first, then the least recently confirmed
//!   connections, never flagged ones), and every eviction is counted.
use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tcpwatch_common::delta::SockSeen;
use tcpwatch_common::{SockRecord, StateEvent};

use crate::aging::Aging;
use crate::model::{
    ConnKey, ConnRecord, MonoNs, NetnsId, Owner, Queues, ResetCounts, RetransInfo, Sample, TcpState,
};

/// Table sizing.
#[derive(Clone, Copy, Debug)]
pub struct TableConfig {
    pub max_connections: usize,
    /// Samples kept per connection that has something to show (Send-Q or retransmissions).
    pub history_len: usize,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            max_connections: 200_000,
            history_len: 32,
        }
    }
}

/// Counters of what the table did, exported as self-metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableStats {
    pub events_applied: u64,
    pub inserted: u64,
    pub removed_closed: u64,
    /// Records removed because their namespace's sweep no longer listed them (a CLOSE event
    /// was lost, or the socket became a `TIME_WAIT` minisocket).
    pub removed_by_sweep: u64,
    /// Records removed because their namespace is gone.
    pub removed_netns_gone: u64,
    /// Records replaced because another socket (another cookie) took their address.
    pub replaced: u64,
    pub evicted: u64,
    pub sweeps_applied: u64,
    /// Sweep records written in full / "still here, unchanged" (change-only sweeps), and
    /// unchanged records for sockets the table did not have (each makes the namespace's next
    /// sweep full).
    pub sweep_records_full: u64,
    pub sweep_records_unchanged: u64,
    pub sweep_records_unknown: u64,
}

/// What a change did to the table, for the live stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Delta {
    Upsert { conn: Box<ConnRecord> },
    Remove { key: ConnKey },
}

/// Result of applying one namespace's sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    /// "Still here, unchanged" records applied (the others of `updated` were full records).
    pub unchanged: usize,
    /// Unchanged records for sockets the table did not have: the namespace's next sweep must
    /// be full.
    pub unknown: usize,
}

#[derive(Debug, Default)]
pub struct ConnTable {
    cfg: TableConfig,
    /// Records are shared with published views (`Arc`): a view holds the records as they
    /// were, and a record is copied only when it changes while a view still holds it.
    /// (Hashed with foldhash: every sweep looks up each listed socket; keys are kernel
    /// addresses and cookies, not chosen by peers.)
    conns: foldhash::HashMap<ConnKey, Arc<ConnRecord>>,
    /// The last event applied to each socket (protects event-created sockets from a sweep
    /// that started before them); after a CLOSE, a tombstone with the closed socket's cookie.
    last_event: foldhash::HashMap<ConnKey, Touch>,
    /// When each namespace was last confirmed: the `last_seen` and ages of the records that
    /// follow it are derived, not written every sweep (`crate::aging`). Shared with views.
    aging: Arc<Aging>,
    /// Records and tombstones per namespace (`table_ns.rs`).
    ns_index: ns::NsIndex,
    stats: TableStats,
}

impl ConnTable {
    #[must_use]
    pub fn new(cfg: TableConfig) -> Self {
        Self {
            cfg,
            ..Self::default()
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    #[must_use]
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    #[must_use]
    pub fn config(&self) -> TableConfig {
        self.cfg
    }

    /// How far state events may push the table past `max_connections` before an eviction
    /// pass (1/64 of the bound: evicting sorts the table, so it is amortised over events).
    /// Sweeps always bring it back to the bound.
    #[must_use]
    pub fn slack(&self) -> usize {
        self.cfg.max_connections / 64 + 1
    }

    #[must_use]
    pub fn get(&self, key: &ConnKey) -> Option<&ConnRecord> {
        self.conns.get(key).map(Arc::as_ref)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConnRecord> + Clone {
        self.conns.values().map(Arc::as_ref)
    }

    /// The records as shared handles: a published view clones these (a reference count each),
    /// not the records.
    pub fn shared_records(&self) -> impl Iterator<Item = &Arc<ConnRecord>> {
        self.conns.values()
    }

    /// Applies one state change. Returns the delta for the stream when `want_delta` (nothing
    /// is cloned otherwise).
    pub fn apply_event(&mut self, ev: &StateEvent, want_delta: bool) -> Option<Delta> {
        self.stats.events_applied += 1;
        let key = ConnKey {
            skaddr: ev.skaddr,
            netns_cookie: ev.netns_cookie,
        };
        let state = TcpState::from_kernel(ev.newstate);
        if state == TcpState::Close {
            // Tombstone: a sweep that started before this close must not resurrect the socket.
            self.last_event.insert(
                key,
                Touch {
                    at: ev.ts_ns,
                    closed_cookie: ev.cookie,
                },
            );
            self.ns_index.tombstone(key);
            if self.conns.remove(&key).is_some() {
                self.ns_index.removed(&key);
                self.stats.removed_closed += 1;
                self.unpin(&key);
            }
            return want_delta.then_some(Delta::Remove { key });
        }
        self.last_event.insert(
            key,
            Touch {
                at: ev.ts_ns,
                closed_cookie: 0,
            },
        );
        if self
            .conns
            .get(&key)
            .is_some_and(|c| other_socket(c.cookie, ev.cookie))
        {
            // A CLOSE was lost and a new socket took the address: nothing carries over.
            self.conns.remove(&key);
            self.ns_index.removed(&key);
            self.stats.replaced += 1;
        }
        if let Some(rec) = self.conns.get_mut(&key) {
            // Its derived times become its own before the event moves them.
            self.aging.apply(Arc::make_mut(rec));
        }
        if !self.conns.contains_key(&key) {
            self.ns_index.added(&key, ev.netns_ino);
        }
        let rec = self.conns.entry(key).or_insert_with(|| {
            self.stats.inserted += 1;
            Arc::new(ConnRecord::new(
                key,
                NetnsId {
                    cookie: ev.netns_cookie,
                    inode: ev.netns_ino,
                },
                addr(ev.family, &ev.saddr, ev.sport),
                addr(ev.family, &ev.daddr, ev.dport),
                state,
                ev.ts_ns,
            ))
        });
        let rec = Arc::make_mut(rec);
        if ev.cookie != 0 {
            rec.cookie = ev.cookie;
        }
        rec.state = state;
        rec.state_since = ev.ts_ns;
        rec.state_since_exact = true;
        rec.last_seen = ev.ts_ns;
        // The local port is assigned after SYN_SENT; take the tuple from every event.
        rec.local = addr(ev.family, &ev.saddr, ev.sport);
        rec.remote = addr(ev.family, &ev.daddr, ev.dport);
        if ev.pid != 0 {
            rec.creator_pid = Some(ev.pid);
            rec.creator_comm = comm_str(&ev.comm);
        }
        rec.retrans.total = rec.retrans.total.max(ev.retrans);
        rec.resets.sent = rec.resets.sent.max(ev.resets_sent);
        rec.resets.received = rec.resets.received.max(ev.resets_received);
        if state == TcpState::Listen {
            // A listener's queues are not meaningful as Send-Q/Recv-Q.
            rec.queues.send_q = 0;
            rec.queues.recv_q = 0;
        }
        if self.aging.follows(rec) {
            // A late event (before its namespace's last sweep began): its time holds.
            Arc::make_mut(&mut self.aging).pin(key);
        }
        want_delta.then(|| Delta::Upsert {
            conn: Box::new(rec.clone()),
        })
    }

    /// Applies the sweep of one namespace. `records` (written in full) and `unchanged` (still
    /// there, unchanged since their last full record: `table_seen.rs`) are everything the
    /// sweep listed there; `started` is the ktime at which the sweep began (its header). With
    /// `deltas`, the records that appeared, disappeared or changed in a way a viewer sees
    /// (state, queues, retransmissions, resets, owner) are pushed there; without, nothing is
    /// cloned.
    #[expect(
        clippy::too_many_arguments,
        reason = "one namespace's sweep, as it comes"
    )]
    pub fn apply_sweep(
        &mut self,
        netns_cookie: u64,
        records: &[SockRecord],
        unchanged: &[SockSeen],
        started: MonoNs,
        clock: KernelClock,
        now: MonoNs,
        mut deltas: Option<&mut Vec<Delta>>,
    ) -> SweepOutcome {
        self.stats.sweeps_applied += 1;
        let mut out = SweepOutcome::default();
        let history_len = self.cfg.history_len;
        // Listed entries that have a record in the table once applied.
        let mut in_table = 0;
        for r in records {
            let fresh = record_from_sweep(r, clock, now);
            let key = fresh.key;
            self.unpin(&key);
            let touch = self.last_event.get(&key).copied();
            let event_after_sweep = touch.is_some_and(|t| t.at > started);
            if let Some(rec) = self.conns.get_mut(&key)
                && other_socket(rec.cookie, fresh.cookie)
            {
                in_table += usize::from(key.netns_cookie == netns_cookie);
                if event_after_sweep {
                    // The record is of a newer socket than this sweep saw: keep it.
                    continue;
                }
                // Another socket at a reused address: replace, inherit nothing.
                let mut fresh = fresh;
                push_sample(&mut fresh, history_len);
                if let Some(d) = deltas.as_deref_mut() {
                    d.push(Delta::Upsert {
                        conn: Box::new(fresh.clone()),
                    });
                }
                *rec = Arc::new(fresh);
                self.stats.replaced += 1;
                out.updated += 1;
            } else if let Some(rec) = self.conns.get_mut(&key) {
                in_table += usize::from(key.netns_cookie == netns_cookie);
                let rec = Arc::make_mut(rec);
                let before = deltas.is_some().then(|| Material::of(rec));
                merge(rec, fresh, event_after_sweep, history_len);
                out.updated += 1;
                if let (Some(d), Some(before)) = (deltas.as_deref_mut(), before)
                    && before != Material::of(rec)
                {
                    d.push(Delta::Upsert {
                        conn: Box::new(rec.clone()),
                    });
                }
            } else if !event_after_sweep
                || touch.is_some_and(|t| other_socket(t.closed_cookie, fresh.cookie))
            {
                // (An event after the sweep began means it closed since: not re-added; unless
                // the socket that closed is another one, an earlier socket at this address.)
                let mut fresh = fresh;
                push_sample(&mut fresh, history_len);
                if let Some(d) = deltas.as_deref_mut() {
                    d.push(Delta::Upsert {
                        conn: Box::new(fresh.clone()),
                    });
                }
                self.ns_index.added(&key, fresh.netns.inode);
                self.conns.insert(key, Arc::new(fresh));
                in_table += usize::from(key.netns_cookie == netns_cookie);
                self.stats.inserted += 1;
                out.added += 1;
            }
        }
        in_table += self.apply_unchanged(netns_cookie, unchanged, started, now, &mut out);
        self.stats.sweep_records_full += records.len() as u64;
        self.stats.sweep_records_unchanged += out.unchanged as u64;
        self.stats.sweep_records_unknown += out.unknown as u64;
        self.remove_unlisted(
            netns_cookie,
            (records, unchanged),
            in_table,
            started,
            &mut out,
            deltas,
        );
        // Every record of the namespace it did not remove was listed (or is newer than it).
        Arc::make_mut(&mut self.aging).confirm(netns_cookie, started, now);
        out
    }

    /// Namespace cookies of every record and tombstone, with the namespace inode when a
    /// record tells it.
    #[must_use]
    pub fn netns_cookies(&self) -> HashMap<u64, Option<u32>> {
        self.ns_index.cookies()
    }

    /// Removes every record and tombstone of namespaces not in `alive` (namespaces that no
    /// longer exist).
    pub fn retain_netns(
        &mut self,
        alive: &std::collections::HashSet<u64>,
        deltas: &mut Vec<Delta>,
    ) {
        let gone: Vec<ConnKey> = self
            .conns
            .keys()
            .filter(|k| !alive.contains(&k.netns_cookie))
            .copied()
            .collect();
        for key in gone {
            self.conns.remove(&key);
            self.last_event.remove(&key);
            self.ns_index.removed(&key);
            self.stats.removed_netns_gone += 1;
            deltas.push(Delta::Remove { key });
        }
        self.last_event
            .retain(|k, _| alive.contains(&k.netns_cookie));
        self.ns_index.retain(alive);
        Arc::make_mut(&mut self.aging).retain_netns(alive);
    }

    /// Sets owners from an inode -> owner lookup, for records whose owner is unknown.
    /// Returns the inodes that still have no owner.
    pub fn attach_owners(&mut self, lookup: impl Fn(u64) -> Option<Arc<Owner>>) -> Vec<u64> {
        let mut missing = Vec::new();
        // A record is written (and copied, if a view holds it) only when its owner changes.
        for rec in self.conns.values_mut() {
            if rec.inode == 0 {
                if rec.owner.is_some() {
                    Arc::make_mut(rec).owner = None;
                }
                continue;
            }
            if rec.owner.is_none() {
                match lookup(rec.inode) {
                    Some(owner) => Arc::make_mut(rec).owner = Some(owner),
                    None => missing.push(rec.inode),
                }
            }
        }
        missing
    }

    /// Forgets the owners of these socket inodes (they no longer hold them): looked up again.
    pub fn forget_owners(&mut self, inodes: &[u64]) {
        if inodes.is_empty() {
            return;
        }
        let set: std::collections::HashSet<u64> = inodes.iter().copied().collect();
        for rec in self.conns.values_mut() {
            if set.contains(&rec.inode) && rec.owner.is_some() {
                Arc::make_mut(rec).owner = None;
            }
        }
    }

    /// Fills the name and namespace of owners' pods known only by UID (from the cgroup path)
    /// from a UID -> pod lookup. Returns how many owners were completed.
    pub fn attach_pods(&mut self, lookup: impl Fn(&str) -> Option<crate::model::PodRef>) -> usize {
        let mut filled = 0;
        for rec in self.conns.values_mut() {
            if let Some(pod) = rec.owner.as_ref().and_then(|o| o.pod.as_ref())
                && pod.name.is_empty()
                && let Some(found) = lookup(&pod.uid)
                && let Some(pod) = Arc::make_mut(rec)
                    .owner
                    .as_mut()
                    .and_then(|o| Arc::make_mut(o).pod.as_mut())
            {
                *pod = found;
                filled += 1;
            }
        }
        filled
    }

    /// Evicts records past `max_connections`: `TIME_WAIT`/`NEW_SYN_RECV` minisockets first, then
    /// the least recently confirmed; records for which `protected` is true (flagged by a
    /// detector) are never evicted. Returns the evicted keys.
    pub fn enforce_bound(&mut self, protected: impl Fn(&ConnKey) -> bool) -> Vec<ConnKey> {
        let max = self.cfg.max_connections;
        if self.conns.len() <= max {
            return Vec::new();
        }
        let excess = self.conns.len() - max;
        let mut candidates: Vec<(bool, MonoNs, ConnKey)> = self
            .conns
            .values()
            .filter(|c| !protected(&c.key))
            .map(|c| (c.full_sock, self.aging.last_seen(c), c.key))
            .collect();
        candidates.sort_unstable();
        let victims: Vec<ConnKey> = candidates.into_iter().take(excess).map(|c| c.2).collect();
        for key in &victims {
            self.conns.remove(key);
            self.ns_index.removed(key);
            self.last_event.remove(key);
            self.unpin(key);
        }
        self.stats.evicted += victims.len() as u64;
        victims
    }
}

fn interesting(c: &ConnRecord) -> bool {
    c.queues.send_q > 0 || c.retrans.chain > 0 || c.queues.accept_queue > 0
}

fn push_sample(c: &mut ConnRecord, history_len: usize) {
    if history_len == 0 || (!interesting(c) && c.history.is_empty()) {
        return;
    }
    if c.history.len() >= history_len {
        c.history.remove(0);
    }
    c.history.push(Sample {
        at: c.last_seen,
        send_q: c.queues.send_q.max(c.queues.accept_queue),
        recv_q: c.queues.recv_q,
        snd_una: c.tcp.snd_una,
        retrans_total: c.retrans.total,
    });
    if !interesting(c) && c.history.iter().all(|s| s.send_q == 0) {
        // Quiet again for a whole window: release the memory.
        c.history = Vec::new();
    }
}

/// What a viewer of the live stream sees change (ages move every sweep and are left out).
#[derive(PartialEq, Eq)]
struct Material {
    state: TcpState,
    queues: Queues,
    retrans: RetransInfo,
    resets: ResetCounts,
    window_zero: bool,
    backoff: u8,
    probes_out: u8,
    owner: Option<u32>,
}

impl Material {
    fn of(c: &ConnRecord) -> Self {
        Self {
            state: c.state,
            queues: c.queues,
            retrans: c.retrans,
            resets: c.resets,
            window_zero: c.tcp.peer_window == 0,
            backoff: c.tcp.backoff,
            probes_out: c.tcp.probes_out,
            owner: c.owner.as_ref().map(|o| o.pid),
        }
    }
}

fn merge(rec: &mut ConnRecord, fresh: ConnRecord, event_after_sweep: bool, history_len: usize) {
    if !event_after_sweep {
        // The sweep is newer than any event: it is the truth about the state.
        if rec.state != fresh.state {
            rec.state = fresh.state;
            rec.state_since = fresh.state_since;
            rec.state_since_exact = fresh.state_since_exact;
        } else if fresh.state_since_exact && !rec.state_since_exact {
            rec.state_since = fresh.state_since;
            rec.state_since_exact = true;
        } else if !fresh.state_since_exact && !rec.state_since_exact {
            // Two lower bounds of the same age: the larger one (earlier entry) holds.
            rec.state_since = rec.state_since.min(fresh.state_since);
        }
    }
    if rec.inode != fresh.inode {
        rec.owner = None;
    }
    if fresh.cookie != 0 {
        rec.cookie = fresh.cookie;
    }
    rec.local = fresh.local;
    rec.remote = fresh.remote;
    rec.inode = fresh.inode;
    rec.uid = fresh.uid;
    rec.netns = fresh.netns;
    rec.first_seen = rec.first_seen.min(fresh.first_seen);
    rec.last_seen = fresh.last_seen;
    if fresh.creator_pid.is_some() {
        rec.creator_pid = fresh.creator_pid;
        rec.creator_comm = fresh.creator_comm;
    }
    rec.queues = fresh.queues;
    rec.tcp = fresh.tcp;
    rec.retrans = fresh.retrans;
    rec.resets = fresh.resets;
    rec.full_sock = fresh.full_sock;
    push_sample(rec, history_len);
}

/// The last event applied to a socket.
#[derive(Clone, Copy, Debug)]
struct Touch {
    at: MonoNs,
    /// A CLOSE's tombstone: the cookie of the socket that closed (0: not known, or not a
    /// CLOSE).
    closed_cookie: u64,
}

/// Two known cookies that differ: a different socket at the same address.
fn other_socket(known: u64, seen: u64) -> bool {
    known != 0 && seen != 0 && known != seen
}

pub use crate::decode::{KernelClock, record_from_sweep};
use crate::decode::{addr, comm_str};

#[path = "table_seen.rs"]
mod seen;

#[path = "table_aging.rs"]
mod aging;

#[path = "table_ns.rs"]
mod ns;

#[cfg(test)]
#[path = "table_tests.rs"]
pub(crate) mod tests;
