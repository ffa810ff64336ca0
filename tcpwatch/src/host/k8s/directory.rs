//! The pod directory (pure state, bounded) and its shared handle [`PodIndex`].
use super::{Event, MAX_PODS, PODS_KNOWN, PodList, PodMeta};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};

use tcpwatch_core::model::PodRef;
use tcpwatch_core::table::ConnTable;

/// What to do after an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    Watch,
    /// The version is gone (410): list again, now.
    Relist,
    /// The server reported an error: count it, back off, list again.
    Failed(String),
}

/// UID -> pod of this node, bounded to [`MAX_PODS`] UIDs, and the version to watch from.
#[derive(Debug, Default)]
pub struct Directory {
    by_uid: HashMap<String, PodRef>,
    /// Mirror pod UID -> static pod UID (the alias also in `by_uid`).
    mirrors: HashMap<String, String>,
    resource_version: Option<String>,
    /// Pods not kept because the directory was full.
    pub dropped: u64,
}

impl Directory {
    #[must_use]
    pub fn get(&self, uid: &str) -> Option<&PodRef> {
        self.by_uid.get(uid)
    }

    /// UIDs known (aliases of static pods included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    #[must_use]
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// Forgets the version: the next sync lists again.
    pub fn forget_version(&mut self) {
        self.resource_version = None;
    }

    /// Replaces everything with a LIST answer.
    pub fn replace(&mut self, list: PodList) {
        self.by_uid.clear();
        self.mirrors.clear();
        for p in list.pods {
            self.insert(&p);
        }
        self.resource_version = Some(list.resource_version);
    }

    pub fn apply(&mut self, ev: Event) -> Next {
        match ev {
            Event::Upsert(p) => {
                self.set_version(&p.resource_version);
                self.insert(&p);
            }
            Event::Deleted(p) => {
                self.set_version(&p.resource_version);
                self.remove(&p.uid);
            }
            Event::Bookmark { resource_version } => self.set_version(&resource_version),
            Event::Error { code: 410, .. } => {
                self.resource_version = None;
                return Next::Relist;
            }
            Event::Error { code, message } => {
                self.resource_version = None;
                return Next::Failed(format!("watch error {code}: {message}"));
            }
        }
        Next::Watch
    }

    fn set_version(&mut self, rv: &str) {
        if !rv.is_empty() {
            self.resource_version = Some(rv.to_owned());
        }
    }

    fn insert(&mut self, p: &PodMeta) {
        let mut keys = vec![p.uid.clone()];
        if let Some(hash) = &p.mirror_of {
            keys.push(hash.clone());
            self.mirrors.insert(p.uid.clone(), hash.clone());
        }
        for uid in keys {
            if self.by_uid.len() >= MAX_PODS && !self.by_uid.contains_key(&uid) {
                self.dropped += 1;
                continue;
            }
            let pod = PodRef {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                uid: uid.clone(),
            };
            self.by_uid.insert(uid, pod);
        }
    }

    fn remove(&mut self, uid: &str) {
        self.by_uid.remove(uid);
        if let Some(hash) = self.mirrors.remove(uid) {
            self.by_uid.remove(&hash);
        }
    }
}

/// The daemon's handle on the directory the watcher thread maintains.
#[derive(Clone, Debug, Default)]
pub struct PodIndex {
    dir: Arc<RwLock<Directory>>,
}

impl PodIndex {
    #[cfg(test)]
    #[must_use]
    pub fn lookup(&self, uid: &str) -> Option<PodRef> {
        self.read(|d| d.get(uid).cloned())
    }

    /// Fills the names of owners' pods known by UID only. Returns how many were filled.
    pub fn attach(&self, table: &mut ConnTable) -> usize {
        self.read(|d| {
            if d.len() == 0 {
                return 0;
            }
            table.attach_pods(|uid| d.get(uid).cloned())
        })
    }

    pub(super) fn read<T>(&self, f: impl FnOnce(&Directory) -> T) -> T {
        f(&self.dir.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(super) fn write<T>(&self, f: impl FnOnce(&mut Directory) -> T) -> T {
        let mut d = self.dir.write().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut d);
        PODS_KNOWN.store(d.len() as u64, Ordering::Relaxed);
        out
    }
}
