//! Query-string parsing and filters of the JSON API. Every error names the parameter at fault,
//! and unknown parameters are refused (a typo must not silently widen a filter).
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::HashSet;

use tcpwatch_core::model::{ConnKey, ConnRecord, Finding, FindingKind, Severity, TcpState};

/// Default and largest `limit` of `/api/v1/connections`.
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 100_000;

/// A 400 answer with a plain-text reason.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, self.0).into_response()
    }
}

/// The raw query extractor of every API handler: a rejection is turned into a [`BadRequest`].
pub type RawQuery = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// Query parameters, checked against the names an endpoint accepts.
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn new(raw: RawQuery, accepted: &[&str]) -> Result<Self, BadRequest> {
        let Query(pairs) =
            raw.map_err(|e| BadRequest(format!("malformed query string: {}\n", e.body_text())))?;
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !accepted.contains(&name.as_str()) {
                return Err(BadRequest(format!(
                    "unknown query parameter `{name}`; accepted: {}\n",
                    accepted.join(", ")
                )));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(BadRequest(format!(
                    "query parameter `{name}` given more than once\n"
                )));
            }
        }
        Ok(Self { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses parameter `name` with `parse`; `expected` describes valid values for the error.
    pub(crate) fn parse<T>(
        &self,
        name: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, BadRequest> {
        self.get(name)
            .map(|v| {
                parse(v).ok_or_else(|| {
                    BadRequest(format!(
                        "bad query parameter `{name}`: expected {expected}, got `{v}`\n"
                    ))
                })
            })
            .transpose()
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// `owner=`: a pid (digits) or a substring of the process name.
#[derive(Debug, PartialEq, Eq)]
pub enum OwnerFilter {
    Pid(u32),
    Comm(String),
}

impl OwnerFilter {
    fn matches(&self, c: &ConnRecord) -> bool {
        match self {
            Self::Pid(p) => {
                c.owner.as_ref().map(|o| o.pid) == Some(*p) || c.creator_pid == Some(*p)
            }
            Self::Comm(s) => {
                c.owner
                    .as_ref()
                    .is_some_and(|o| o.comm.contains(s.as_str()))
                    || c.creator_comm
                        .as_deref()
                        .is_some_and(|cc| cc.contains(s.as_str()))
            }
        }
    }
}

/// Filters of `/api/v1/connections`.
#[derive(Debug, PartialEq, Eq)]
pub struct ConnFilter {
    pub state: Option<TcpState>,
    pub port: Option<u16>,
    pub netns: Option<u32>,
    pub owner: Option<OwnerFilter>,
    pub flagged: Option<bool>,
    pub limit: usize,
}

impl ConnFilter {
    pub const PARAMS: [&'static str; 6] = ["state", "port", "netns", "owner", "flagged", "limit"];

    pub fn from_query(raw: RawQuery) -> Result<Self, BadRequest> {
        let p = Params::new(raw, &Self::PARAMS)?;
        let limit = p
            .parse("limit", "an integer from 0 to 100000", |v| {
                v.parse::<usize>().ok().filter(|&l| l <= MAX_LIMIT)
            })?
            .unwrap_or(DEFAULT_LIMIT);
        let owner = p.parse(
            "owner",
            "a pid or a non-empty process name substring",
            |v| {
                if v.is_empty() {
                    None
                } else if v.bytes().all(|b| b.is_ascii_digit()) {
                    v.parse().ok().map(OwnerFilter::Pid)
                } else {
                    Some(OwnerFilter::Comm(v.to_owned()))
                }
            },
        )?;
        Ok(Self {
            state: p.parse(
                "state",
                "a TCP state such as ESTABLISHED, LISTEN, CLOSE_WAIT (or ss names: ESTAB, CLOSE-WAIT)",
                TcpState::parse,
            )?,
            port: p.parse("port", "a port number from 0 to 65535", |v| v.parse().ok())?,
            netns: p.parse("netns", "a network namespace inode number", |v| v.parse().ok())?,
            owner,
            flagged: p.parse("flagged", "true or false", parse_bool)?,
            limit,
        })
    }

    /// `port` matches either end; `flagged` keeps connections with (true) or without (false)
    /// an open finding (`flagged`: the sockets that have one).
    pub fn matches(&self, c: &ConnRecord, flagged: &HashSet<ConnKey>) -> bool {
        self.state.is_none_or(|st| c.state == st)
            && self
                .port
                .is_none_or(|p| c.local.port() == p || c.remote.port() == p)
            && self.netns.is_none_or(|n| c.netns.inode == n)
            && self.owner.as_ref().is_none_or(|o| o.matches(c))
            && self.flagged.is_none_or(|f| flagged.contains(&c.key) == f)
    }
}

/// Filters of `/api/v1/findings`.
#[derive(Debug, PartialEq, Eq)]
pub struct FindingFilter {
    pub kind: Option<FindingKind>,
    pub severity: Option<Severity>,
}

impl FindingFilter {
    pub const PARAMS: [&'static str; 2] = ["kind", "severity"];

    pub fn from_query(raw: RawQuery) -> Result<Self, BadRequest> {
        let p = Params::new(raw, &Self::PARAMS)?;
        let kinds = FindingKind::ALL.map(FindingKind::name).join(", ");
        Ok(Self {
            kind: p.parse("kind", &format!("one of {kinds}"), |v| {
                FindingKind::ALL.into_iter().find(|k| k.name() == v)
            })?,
            severity: parse_severity(&p)?,
        })
    }

    pub fn matches(&self, f: &Finding) -> bool {
        self.kind.is_none_or(|k| f.kind == k) && self.severity.is_none_or(|s| f.severity == s)
    }
}

/// The `severity` parameter of `/api/v1/findings` and `/api/v1/incidents`.
pub fn parse_severity(p: &Params) -> Result<Option<Severity>, BadRequest> {
    p.parse("severity", "one of info, warning, critical", |v| {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|s| s.name() == v)
    })
}

/// Nothing to check at run time: parameterless endpoints only refuse unknown parameters.
pub fn no_params(raw: RawQuery) -> Result<(), BadRequest> {
    Params::new(raw, &[]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[expect(
        clippy::unnecessary_wraps,
        reason = "builds the extractor's result type"
    )]
    fn q(pairs: &[(&str, &str)]) -> RawQuery {
        Ok(Query(
            pairs
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        ))
    }

    #[test]
    fn connection_filters_parse() {
        let f = ConnFilter::from_query(q(&[
            ("state", "close-wait"),
            ("port", "80"),
            ("owner", "12"),
        ]))
        .unwrap();
        assert_eq!(f.state, Some(TcpState::CloseWait));
        assert_eq!(f.port, Some(80));
        assert_eq!(f.owner, Some(OwnerFilter::Pid(12)));
        assert_eq!(f.limit, DEFAULT_LIMIT);
        let f = ConnFilter::from_query(q(&[("owner", "ngin"), ("flagged", "true")])).unwrap();
        assert_eq!(f.owner, Some(OwnerFilter::Comm("ngin".into())));
        assert_eq!(f.flagged, Some(true));
    }

    #[test]
    fn errors_name_the_parameter() {
        for (pairs, name) in [
            (vec![("port", "99999")], "`port`"),
            (vec![("state", "SLEEPING")], "`state`"),
            (vec![("limit", "100001")], "`limit`"),
            (vec![("netns", "-1")], "`netns`"),
            (vec![("flagged", "maybe")], "`flagged`"),
            (vec![("owner", "")], "`owner`"),
            (vec![("prot", "80")], "`prot`"),
            (vec![("port", "80"), ("port", "81")], "`port`"),
        ] {
            let e = ConnFilter::from_query(q(&pairs)).unwrap_err();
            assert!(e.0.contains(name), "{pairs:?}: {}", e.0);
        }
        let e = FindingFilter::from_query(q(&[("kind", "nope")])).unwrap_err();
        assert!(
            e.0.contains("`kind`") && e.0.contains("close_wait_stuck"),
            "{}",
            e.0
        );
        assert!(no_params(q(&[("x", "1")])).unwrap_err().0.contains("`x`"));
    }
}
