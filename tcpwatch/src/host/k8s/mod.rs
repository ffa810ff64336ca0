//! Pod names for the pod UIDs found in cgroup paths ([`tcpwatch_core::k8s::parse_cgroup`]).
//!
//! In a cluster (`KUBERNETES_SERVICE_HOST`/`_PORT` set, the service account's token and CA
//! bundle mounted, `NODE_NAME` set from `spec.nodeName`), a dedicated thread LISTs the pods of
//! this node (`fieldSelector=spec.nodeName=...`), then watches them from the list's
//! `resourceVersion` with bookmarks, and keeps UID -> (namespace, name) in a bounded
//! [`Directory`] shared with the daemon through [`PodIndex`]. A watch that ends normally
//! (server timeout) resumes from the last version seen; `410 Gone` re-lists at once; other
//! errors are counted and retried with exponential backoff, re-listing. Only metadata is
//! asked for (`as=PartialObjectMetadataList`); full `Pod` objects decode the same way.
//!
//! HTTPS only, trusting only the service account's CA bundle. Outside a cluster nothing runs.
//!
//! Static pods: the kubelet names their cgroup after the config hash, and the API shows a
//! mirror pod with another UID whose `kubernetes.io/config.mirror` annotation is that hash;
//! both are indexed.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Most UIDs kept (pods and static-pod aliases). A node runs 110 pods by default and rarely
/// more than a few hundred.
pub const MAX_PODS: usize = 4096;
/// Longest watch event line read (a pod object with large annotations stays far below).
const MAX_EVENT_BYTES: u64 = 16 << 20;
/// Largest LIST answer read.
const MAX_LIST_BYTES: u64 = 256 << 20;
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
pub(crate) const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The API server ends a watch after this long; the client gives it some slack more.
const WATCH_SECONDS: u64 = 290;
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_mins(1);
const ACCEPT_LIST: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
const ACCEPT_WATCH: &str =
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

/// Failed API requests and watch errors since start (`tcpwatch_kubernetes_api_errors_total`).
static API_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Pods known (`tcpwatch_kubernetes_pods`).
static PODS_KNOWN: AtomicU64 = AtomicU64::new(0);

#[must_use]
pub fn api_errors() -> u64 {
    API_ERRORS.load(Ordering::Relaxed)
}

#[must_use]
pub fn pods_known() -> u64 {
    PODS_KNOWN.load(Ordering::Relaxed)
}

mod client;
mod decode;
mod directory;

pub use client::spawn;
pub(crate) use client::{agent, base_url};
pub use decode::{Event, PodList, PodMeta, decode_event, decode_list};
use decode::{read_event_line, status_message};
pub use directory::{Directory, Next, PodIndex};

#[cfg(test)]
mod tests;
