//! Decoding of the API server's pod lists and watch events (pure).
use super::{MAX_EVENT_BYTES, MIRROR_ANNOTATION};
use std::collections::BTreeMap;
use std::io::{BufRead, Read as _};

use anyhow::Context as _;
use serde::Deserialize;

/// What tcpwatch keeps of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    /// For the mirror pod of a static pod: the UID its containers' cgroups carry.
    pub mirror_of: Option<String>,
}

/// A decoded LIST answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodList {
    pub resource_version: String,
    pub pods: Vec<PodMeta>,
}

/// A decoded watch event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `ADDED` or `MODIFIED`.
    Upsert(PodMeta),
    Deleted(PodMeta),
    Bookmark {
        resource_version: String,
    },
    /// `ERROR`: the object is a `Status` (410 when the version is too old).
    Error {
        code: u16,
        message: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawMeta {
    uid: String,
    name: String,
    namespace: String,
    resource_version: String,
    annotations: Option<BTreeMap<String, String>>,
}

/// A pod, a `PartialObjectMetadata` or a `Status`: only the fields tcpwatch reads.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawObject {
    kind: String,
    metadata: Option<RawMeta>,
    code: Option<u16>,
    reason: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawList {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Option<RawMeta>,
    #[serde(default)]
    items: Option<Vec<RawObject>>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    object: RawObject,
}

pub(super) fn pod_meta(m: RawMeta) -> PodMeta {
    let mirror_of = m
        .annotations
        .and_then(|mut a| a.remove(MIRROR_ANNOTATION))
        .filter(|h| !h.is_empty());
    PodMeta {
        uid: m.uid,
        namespace: m.namespace,
        name: m.name,
        resource_version: m.resource_version,
        mirror_of,
    }
}

/// Decodes a `PodList` or `PartialObjectMetadataList`.
pub fn decode_list(body: &[u8]) -> anyhow::Result<PodList> {
    let raw: RawList = serde_json::from_slice(body).context("decoding the pod list")?;
    if raw.kind == "Status" {
        anyhow::bail!(
            "the API server answered a Status: {}",
            raw.message.unwrap_or_default()
        );
    }
    let resource_version = raw.metadata.map(|m| m.resource_version).unwrap_or_default();
    if resource_version.is_empty() {
        anyhow::bail!("pod list without metadata.resourceVersion");
    }
    let pods = raw
        .items
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| o.metadata)
        .map(pod_meta)
        .filter(|p| !p.uid.is_empty())
        .collect();
    Ok(PodList {
        resource_version,
        pods,
    })
}

/// Decodes one line of a watch stream.
pub fn decode_event(line: &[u8]) -> anyhow::Result<Event> {
    let raw: RawEvent = serde_json::from_slice(line).context("decoding a watch event")?;
    let obj = raw.object;
    let meta = |m: Option<RawMeta>| -> anyhow::Result<PodMeta> {
        let m = pod_meta(m.unwrap_or_default());
        if m.uid.is_empty() {
            anyhow::bail!("{} event about an object without uid", raw.kind);
        }
        Ok(m)
    };
    Ok(match raw.kind.as_str() {
        "ADDED" | "MODIFIED" => Event::Upsert(meta(obj.metadata)?),
        "DELETED" => Event::Deleted(meta(obj.metadata)?),
        "BOOKMARK" => Event::Bookmark {
            resource_version: obj.metadata.map(|m| m.resource_version).unwrap_or_default(),
        },
        "ERROR" => Event::Error {
            code: obj.code.unwrap_or(0),
            message: match (obj.reason, obj.message) {
                (Some(r), Some(m)) => format!("{r}: {m}"),
                (r, m) => r.or(m).unwrap_or(obj.kind),
            },
        },
        other => anyhow::bail!("unknown watch event type {other:?}"),
    })
}

/// The message of a `Status` body (error answers), or the start of the body.
pub(super) fn status_message(body: &[u8]) -> String {
    match serde_json::from_slice::<RawObject>(body) {
        Ok(o) if o.kind == "Status" => o.message.or(o.reason).unwrap_or_default(),
        _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// Reads one newline-terminated watch event into `buf`; false at the end of the stream.
pub(super) fn read_event_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    let n = r.by_ref().take(MAX_EVENT_BYTES).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() != Some(&b'\n') && n as u64 == MAX_EVENT_BYTES {
        return Err(std::io::Error::other(format!(
            "watch event longer than {MAX_EVENT_BYTES} bytes"
        )));
    }
    Ok(true)
}
