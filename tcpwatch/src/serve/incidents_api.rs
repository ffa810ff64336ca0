//! The bodies of `/api/v1/findings` and `/api/v1/incidents` (types of
//! `tcpwatch_core::api`), built from the published view, and the incidents' query filter.
use serde::Serialize;
use tcpwatch_core::api::IncidentsBody;
use tcpwatch_core::incident::{Incident, IncidentKind};
use tcpwatch_core::model::{Finding, NS_PER_SEC, Severity, Subject};
use tcpwatch_core::wall::WallClock;

use crate::serve::api::{BadRequest, FindingFilter, Params, RawQuery, parse_severity};
use crate::view::View;

/// Filters of `/api/v1/incidents`.
#[derive(Debug, PartialEq, Eq)]
pub struct IncidentFilter {
    pub kind: Option<IncidentKind>,
    pub severity: Option<Severity>,
}

impl IncidentFilter {
    pub const PARAMS: [&'static str; 2] = ["kind", "severity"];

    pub fn from_query(raw: RawQuery) -> Result<Self, BadRequest> {
        let p = Params::new(raw, &Self::PARAMS)?;
        let kinds = IncidentKind::ALL.map(IncidentKind::name).join(", ");
        Ok(Self {
            kind: p.parse("kind", &format!("one of {kinds}"), |v| {
                IncidentKind::ALL.into_iter().find(|k| k.name() == v)
            })?,
            severity: parse_severity(&p)?,
        })
    }

    pub fn matches(&self, i: &Incident) -> bool {
        self.kind.is_none_or(|k| i.kind == k) && self.severity.is_none_or(|s| i.severity == s)
    }
}

/// `GET /api/v1/incidents`: the open incidents (worst first) and the recently resolved ones.
pub fn incidents_body(s: &View, f: &IncidentFilter) -> IncidentsBody {
    let open = crate::serve::metrics::incidents::worst_first(
        &s.judged.incidents_open.iter().collect::<Vec<_>>(),
    );
    IncidentsBody {
        open: open.into_iter().filter(|i| f.matches(i)).cloned().collect(),
        recently_resolved: s
            .judged
            .incidents_resolved
            .iter()
            .filter(|i| f.matches(i))
            .cloned()
            .collect(),
    }
}

/// A finding as `/api/v1/findings` shows it: `tcpwatch_core::api::FindingsBody`'s `Finding`
/// (with its `incident_id`) plus two fields for people.
#[derive(Serialize)]
pub struct FindingView<'a> {
    #[serde(flatten)]
    pub finding: Finding,
    /// Name of the finding's network namespace (`ip netns` / container), if known.
    pub netns_name: Option<&'a str>,
    /// Seconds since the condition started.
    pub since_seconds_ago: f64,
}

/// `GET /api/v1/findings`: the shape of `tcpwatch_core::api::FindingsBody`.
#[derive(Serialize)]
pub struct FindingsView<'a> {
    pub open: Vec<FindingView<'a>>,
    pub recently_resolved: Vec<FindingView<'a>>,
}

fn view<'a>(s: &'a View, f: &Finding, wall: &WallClock) -> FindingView<'a> {
    let now = wall.mono;
    let cookie = match &f.subject {
        Subject::Connection { netns, .. }
        | Subject::Listener { netns, .. }
        | Subject::Port { netns, .. }
        | Subject::Peer { netns, .. } => netns.cookie,
    };
    #[expect(
        clippy::cast_precision_loss,
        reason = "an age in ns fits f64 well enough to show"
    )]
    let since_seconds_ago = now.saturating_sub(f.since) as f64 / NS_PER_SEC as f64;
    // (The view's findings carry their incident's id already.)
    let mut finding = f.clone();
    finding.fill_wall_times(wall);
    FindingView {
        finding,
        netns_name: s.netns_names.get(&cookie).map(String::as_str),
        since_seconds_ago,
    }
}

/// The findings body at `wall`'s monotonic time, each open finding carrying its open
/// incident's id and the wall-clock twins of its times.
pub fn findings_body<'a>(s: &'a View, f: &FindingFilter, wall: WallClock) -> FindingsView<'a> {
    FindingsView {
        open: s
            .judged
            .findings_open
            .iter()
            .filter(|x| f.matches(x))
            .map(|x| view(s, x, &wall))
            .collect(),
        recently_resolved: s
            .judged
            .findings_resolved
            .iter()
            .filter(|x| f.matches(x))
            .map(|x| view(s, x, &wall))
            .collect(),
    }
}
