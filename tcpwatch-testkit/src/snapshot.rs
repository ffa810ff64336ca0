//! Readers of the daemon's answers (`tcpwatch snapshot --json`, `/api/v1/connections`):
//! the connections of one namespace, one connection by state and addresses, one finding by
//! kind and endpoint.
use std::net::SocketAddr;

use serde_json::Value;

/// The connections of one namespace (by inode) in a snapshot or API answer.
#[must_use]
pub fn conns_in(v: &Value, netns_inode: u64) -> Vec<Value> {
    let list = v
        .get("connections")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.into_iter()
        .filter(|c| c["netns"]["inode"].as_u64() == Some(netns_inode))
        .collect()
}

/// The connection in `state` with local address `local` (and remote `remote`, if given).
#[must_use]
pub fn find<'a>(
    conns: &'a [Value],
    state: &str,
    local: &SocketAddr,
    remote: Option<&SocketAddr>,
) -> Option<&'a Value> {
    conns.iter().find(|c| {
        c["state"] == state
            && c["local"] == local.to_string()
            && remote.is_none_or(|r| c["remote"] == r.to_string())
    })
}

/// The finding of `kind` whose subject's local address is `local`.
#[must_use]
pub fn finding_at<'a>(findings: &'a [Value], kind: &str, local: &SocketAddr) -> Option<&'a Value> {
    findings
        .iter()
        .find(|f| f["kind"] == kind && f["subject"]["local"] == local.to_string())
}

/// The finding of `kind` whose subject's remote endpoint is `remote`.
#[must_use]
pub fn finding_to<'a>(findings: &'a [Value], kind: &str, remote: &SocketAddr) -> Option<&'a Value> {
    findings
        .iter()
        .find(|f| f["kind"] == kind && f["subject"]["remote"] == remote.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_matches_state_and_addresses() {
        let l: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 80));
        let r: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 5000));
        let conns = vec![
            serde_json::json!({"state": "LISTEN", "local": "127.0.0.1:80", "remote": "0.0.0.0:0"}),
            serde_json::json!({"state": "ESTABLISHED", "local": "127.0.0.1:80", "remote": "127.0.0.1:5000"}),
        ];
        assert!(find(&conns, "LISTEN", &l, None).is_some());
        assert!(find(&conns, "ESTABLISHED", &l, Some(&r)).is_some());
        assert!(find(&conns, "ESTABLISHED", &r, Some(&l)).is_none());
    }

    #[test]
    fn finds_findings_by_kind_and_endpoint() {
        let l = SocketAddr::from(([127, 0, 0, 1], 80));
        let r = SocketAddr::from(([127, 0, 0, 1], 5000));
        let fs = vec![
            serde_json::json!({"kind": "a", "subject": {"local": "127.0.0.1:80", "remote": "127.0.0.1:5000"}}),
            serde_json::json!({"kind": "b", "subject": {"local": "127.0.0.1:5000"}}),
        ];
        assert!(finding_at(&fs, "a", &l).is_some());
        assert!(finding_at(&fs, "b", &l).is_none());
        assert!(finding_to(&fs, "a", &r).is_some());
        assert!(finding_to(&fs, "a", &l).is_none());
    }

    #[test]
    fn conns_in_keeps_one_namespace() {
        let v = serde_json::json!({"connections": [
            {"netns": {"inode": 7}, "state": "LISTEN"},
            {"netns": {"inode": 8}, "state": "LISTEN"},
        ]});
        assert_eq!(conns_in(&v, 7).len(), 1);
        assert!(conns_in(&serde_json::json!({}), 7).is_empty());
    }
}
