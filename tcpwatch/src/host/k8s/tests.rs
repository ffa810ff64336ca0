//! Tests of the pod directory on recorded API answers (`fixtures/`, in the shapes the API
//! server sends: `PodList`, `PartialObjectMetadataList`, watch event lines, `Status`).
use std::io::Cursor;

use tcpwatch_common::tcp_state;
use tcpwatch_core::model::Owner;

use super::client::{list_url, valid_node_name, watch_url};
use super::*;
use tcpwatch_core::model::PodRef;

const POD_LIST: &str = include_str!("fixtures/pod_list.json");
const METADATA_LIST: &str = include_str!("fixtures/pod_metadata_list.json");
const EMPTY_LIST: &str = include_str!("fixtures/pod_list_empty.json");
const FORBIDDEN: &str = include_str!("fixtures/status_forbidden.json");
const WATCH: &str = include_str!("fixtures/watch_stream.json");

const WEB: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
const PROXY: &str = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";
const PROXY_HASH: &str = "5e1f2c3b4a5968778695a4b3c2d1e0f9";
const DB: &str = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f";
const API: &str = "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b";

fn name(d: &Directory, uid: &str) -> Option<String> {
    d.get(uid).map(|p| format!("{}/{}", p.namespace, p.name))
}

fn events() -> Vec<Event> {
    let mut r = Cursor::new(WATCH.as_bytes());
    let mut line = Vec::new();
    let mut out = Vec::new();
    while read_event_line(&mut r, &mut line).unwrap() {
        out.push(decode_event(&line).unwrap());
    }
    out
}

#[test]
fn pod_list_is_decoded() {
    let l = decode_list(POD_LIST.as_bytes()).unwrap();
    assert_eq!(l.resource_version, "2946821");
    assert_eq!(l.pods.len(), 3);
    assert_eq!(
        l.pods[0],
        PodMeta {
            uid: WEB.into(),
            namespace: "shop".into(),
            name: "web-7c9d8f6b5-x2kqp".into(),
            resource_version: "2946102".into(),
            mirror_of: None,
        }
    );
    assert_eq!(l.pods[1].mirror_of.as_deref(), Some(PROXY_HASH));
    let m = decode_list(METADATA_LIST.as_bytes()).unwrap();
    assert_eq!(m.pods, l.pods[..1]);
    let e = decode_list(EMPTY_LIST.as_bytes()).unwrap();
    assert_eq!((e.resource_version.as_str(), e.pods.len()), ("2946821", 0));
}

#[test]
fn bad_lists_are_errors() {
    let err = decode_list(FORBIDDEN.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("pods is forbidden"), "{err}");
    assert!(decode_list(b"{\"kind\":\"PodList\",\"items\":[]}").is_err());
    assert!(decode_list(b"<html>").is_err());
    assert!(status_message(FORBIDDEN.as_bytes()).starts_with("pods is forbidden"));
    assert_eq!(status_message(b"upstream timeout"), "upstream timeout");
}

#[test]
fn watch_events_are_decoded() {
    let ev = events();
    assert_eq!(ev.len(), 6);
    assert!(matches!(&ev[0], Event::Upsert(p) if p.uid == API && p.resource_version == "2946830"));
    assert!(matches!(&ev[1], Event::Upsert(p) if p.uid == API && p.name == "api-6d5f7b9c8-q7wzt"));
    assert_eq!(
        ev[2],
        Event::Bookmark {
            resource_version: "2946900".into()
        }
    );
    assert!(matches!(&ev[3], Event::Deleted(p) if p.uid == DB));
    // A PartialObjectMetadata object decodes like a pod.
    assert!(matches!(&ev[4], Event::Upsert(p) if p.uid == WEB && p.namespace == "shop"));
    assert_eq!(
        ev[5],
        Event::Error {
            code: 410,
            message: "Expired: too old resource version: 2946821 (2947500)".into()
        }
    );
}

#[test]
fn bad_watch_events_are_errors() {
    assert!(decode_event(b"{\"type\":\"ADDED\",\"object\":{\"metadata\":{}}}").is_err());
    assert!(decode_event(b"{\"type\":\"SURPRISE\",\"object\":{}}").is_err());
    assert!(decode_event(b"not json").is_err());
    // An event line longer than the limit is refused, not buffered without end.
    let long = vec![b' '; usize::try_from(MAX_EVENT_BYTES).unwrap() + 10];
    let mut line = Vec::new();
    assert!(read_event_line(&mut Cursor::new(long), &mut line).is_err());
}

#[test]
fn list_then_watch_maintains_the_directory() {
    let mut d = Directory::default();
    assert_eq!(d.resource_version(), None);
    d.replace(decode_list(POD_LIST.as_bytes()).unwrap());
    assert_eq!(d.resource_version(), Some("2946821"));
    assert_eq!(name(&d, WEB).as_deref(), Some("shop/web-7c9d8f6b5-x2kqp"));
    assert_eq!(name(&d, DB).as_deref(), Some("shop/db-0"));
    // Static pod: known by its mirror UID and by the config hash its cgroups carry, the
    // latter keeping the cgroup's UID.
    assert_eq!(
        name(&d, PROXY).as_deref(),
        Some("kube-system/kube-proxy-node-a")
    );
    assert_eq!(d.get(PROXY_HASH).unwrap().uid, PROXY_HASH);
    assert_eq!(d.len(), 4);

    let mut ev = events().into_iter();
    assert_eq!(d.apply(ev.next().unwrap()), Next::Watch); // ADDED api
    assert_eq!(d.resource_version(), Some("2946830"));
    assert_eq!(name(&d, API).as_deref(), Some("shop/api-6d5f7b9c8-q7wzt"));
    assert_eq!(d.apply(ev.next().unwrap()), Next::Watch); // MODIFIED api
    assert_eq!(d.len(), 5);
    assert_eq!(d.apply(ev.next().unwrap()), Next::Watch); // BOOKMARK
    assert_eq!(d.resource_version(), Some("2946900"));
    assert_eq!(d.apply(ev.next().unwrap()), Next::Watch); // DELETED db-0
    assert_eq!(d.get(DB), None);
    assert_eq!(d.apply(ev.next().unwrap()), Next::Watch); // MODIFIED web
    assert_eq!(d.resource_version(), Some("2946950"));
    assert_eq!(d.apply(ev.next().unwrap()), Next::Relist); // ERROR 410
    assert_eq!(d.resource_version(), None);
    // Pods stay known until the new list replaces them.
    assert!(d.get(WEB).is_some());
    d.replace(decode_list(METADATA_LIST.as_bytes()).unwrap());
    assert_eq!(d.len(), 1);
    assert_eq!(d.get(API), None);
}

#[test]
fn deleting_a_mirror_pod_drops_its_alias() {
    let mut d = Directory::default();
    d.replace(decode_list(POD_LIST.as_bytes()).unwrap());
    let proxy = decode_list(POD_LIST.as_bytes()).unwrap().pods.remove(1);
    assert_eq!(d.apply(Event::Deleted(proxy)), Next::Watch);
    assert_eq!((d.get(PROXY), d.get(PROXY_HASH)), (None, None));
}

#[test]
fn other_watch_errors_fail_and_relist() {
    let mut d = Directory::default();
    d.replace(decode_list(EMPTY_LIST.as_bytes()).unwrap());
    let next = d.apply(Event::Error {
        code: 500,
        message: "etcdserver: leader changed".into(),
    });
    assert!(
        matches!(&next, Next::Failed(m) if m.contains("leader changed")),
        "{next:?}"
    );
    assert_eq!(d.resource_version(), None);
}

#[test]
fn directory_is_bounded() {
    let mut d = Directory::default();
    let pod = |i: usize| PodMeta {
        uid: format!("uid-{i}"),
        namespace: "ns".into(),
        name: format!("p{i}"),
        resource_version: i.to_string(),
        mirror_of: None,
    };
    d.replace(PodList {
        resource_version: "1".into(),
        pods: (0..MAX_PODS + 10).map(pod).collect(),
    });
    assert_eq!(d.len(), MAX_PODS);
    assert_eq!(d.dropped, 10);
    assert_eq!(d.apply(Event::Upsert(pod(MAX_PODS + 20))), Next::Watch);
    assert_eq!(d.len(), MAX_PODS);
    assert_eq!(d.dropped, 11);
    // Known pods still update, and deleting one makes room.
    let mut p0 = pod(0);
    p0.name = "renamed".into();
    d.apply(Event::Upsert(p0));
    assert_eq!(d.get("uid-0").unwrap().name, "renamed");
    d.apply(Event::Deleted(pod(1)));
    d.apply(Event::Upsert(pod(MAX_PODS + 20)));
    assert!(d.get(&format!("uid-{}", MAX_PODS + 20)).is_some());
}

#[test]
fn urls() {
    assert_eq!(base_url("10.96.0.1", "443"), "https://10.96.0.1:443");
    assert_eq!(base_url("fd00::1", "443"), "https://[fd00::1]:443");
    assert_eq!(
        list_url("https://10.96.0.1:443", "node-a"),
        "https://10.96.0.1:443/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a"
    );
    assert_eq!(
        watch_url("https://h:1", "node-a", "29 46"),
        "https://h:1/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&watch=1&resourceVersion=29%2046&allowWatchBookmarks=true&timeoutSeconds=290"
    );
    assert!(valid_node_name("ip-10-0-0-11.eu-west-1.compute.internal"));
    for bad in ["", "Node", "a&b=c", "a b"] {
        assert!(!valid_node_name(bad), "{bad}");
    }
}

#[test]
fn ca_bundle_without_certificates_is_refused() {
    assert!(agent(b"").is_err());
    assert!(agent(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err());
}

#[test]
fn index_fills_pod_names_of_owners() {
    let uid = WEB;
    let mut s = crate::serve::metrics::tests::shared_with(&[(
        1,
        vec![
            crate::serve::metrics::tests::sock(1, 1, tcp_state::ESTABLISHED, 80, 4000),
            crate::serve::metrics::tests::sock(2, 1, tcp_state::ESTABLISHED, 80, 4001),
        ],
    )]);
    s.table.attach_owners(|ino| {
        Some(
            Owner {
                pid: 7,
                comm: "nginx".into(),
                pod: (ino == 1001).then(|| PodRef {
                    uid: uid.into(),
                    ..PodRef::default()
                }),
                ..Owner::default()
            }
            .into(),
        )
    });
    let index = PodIndex::default();
    assert_eq!(index.attach(&mut s.table), 0);
    index.write(|d| d.replace(decode_list(POD_LIST.as_bytes()).unwrap()));
    assert!(pods_known() >= 4);
    assert_eq!(index.lookup(uid).unwrap().name, "web-7c9d8f6b5-x2kqp");
    assert_eq!(index.attach(&mut s.table), 1);
    // Filled once: names already known are not looked up again.
    assert_eq!(index.attach(&mut s.table), 0);
    let pods: Vec<_> = s
        .table
        .iter()
        .filter_map(|c| c.owner.as_ref()?.pod.clone())
        .collect();
    assert_eq!(
        pods,
        [PodRef {
            namespace: "shop".into(),
            name: "web-7c9d8f6b5-x2kqp".into(),
            uid: uid.into(),
        }]
    );
}
