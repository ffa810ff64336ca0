//! `ss` ground truth: the sockets of a namespace as `ss -tanieH` prints them, parsed.
use std::net::SocketAddr;

use crate::netns::Netns;

/// A socket as `ss -tani` reports it.
#[derive(Debug, Clone)]
pub struct SsRow {
    pub state: String,
    pub recv_q: u32,
    pub send_q: u32,
    pub local: SocketAddr,
    pub peer: String,
    pub info: String,
}

impl SsRow {
    /// A `key:value` field of the info line, e.g. `backoff`.
    #[must_use]
    pub fn field(&self, key: &str) -> Option<String> {
        self.info.split_whitespace().find_map(|w| {
            w.strip_prefix(key)
                .and_then(|r| r.strip_prefix(':'))
                .map(str::to_owned)
        })
    }
}

/// `ss -tanieH` inside a namespace, parsed. Panics when `ss` fails.
#[must_use]
pub fn ss(ns: &Netns) -> Vec<SsRow> {
    parse_ss(&ns.exec("ss", &["-tanieH"]))
}

/// Parses `ss -tanieH` output: one row per socket, its continuation lines joined into `info`.
/// A `*` address is `0.0.0.0`; rows whose local address does not parse are left out.
#[must_use]
pub fn parse_ss(text: &str) -> Vec<SsRow> {
    let mut rows: Vec<SsRow> = Vec::new();
    for line in text.lines() {
        if line.starts_with(|c: char| c.is_whitespace()) {
            if let Some(last) = rows.last_mut() {
                last.info.push_str(line.trim());
                last.info.push(' ');
            }
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let Ok(local) = f[3].replace('*', "0.0.0.0").parse() else {
            continue;
        };
        rows.push(SsRow {
            state: f[0].to_owned(),
            recv_q: f[1].parse().unwrap_or(0),
            send_q: f[2].parse().unwrap_or(0),
            local,
            peer: f[4].to_owned(),
            info: f[5..].join(" ") + " ",
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::parse_ss;

    #[test]
    fn parses_rows_and_their_info_lines() {
        let text = "LISTEN 0 4096 127.0.0.1:80 0.0.0.0:* ino:12 sk:1\n\
                    ESTAB 5 10 127.0.0.1:80 127.0.0.1:5000 ino:13\n\
                    \t cubic backoff:2 rto:800\n\
                    garbage\n";
        let rows = parse_ss(text);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].recv_q, rows[1].send_q), (5, 10));
        assert_eq!(rows[1].field("backoff").as_deref(), Some("2"));
        assert_eq!(rows[0].field("ino").as_deref(), Some("12"));
        assert_eq!(rows[0].field("backoff"), None);
    }
}
