//! The pure UI state of `tcpwatch top`: data, views, sorting, filtering, selection and keys.
//!
//! Nothing here reads the clock or touches the terminal: time is passed in as [`MonoNs`] and
//! keys as crossterm [`KeyEvent`]s, so every behaviour is unit-testable.
//!
//! - [`wire`]: what the daemon sends (the `tcpwatch_core::api` contract) and how a stream event
//!   is parsed;
//! - `store`: the data (connections, findings, incidents) and how snapshots and events apply;
//! - `view`: views, rows, sorting and selection;
//! - `keys`: the key bindings;
//! - `detail`: the detail pane and the incident summary;
//! - `order`: filtering and ordering of rows.
//!
//! [`MonoNs`]: tcpwatch_core::model::MonoNs
//! [`KeyEvent`]: crossterm::event::KeyEvent
use std::collections::HashMap;

use tcpwatch_core::incident::Incident;
use tcpwatch_core::model::{ConnKey, ConnRecord, Finding};

mod detail;
mod exposure;
mod keys;
mod order;
mod store;
mod view;
pub mod wire;

pub use detail::{finding_age, incident_age};
pub use exposure::exposure_key;
pub use order::{
    accept_fill, incident_port, incident_process, incident_remote, subject_key, subject_local,
    subject_owner, subject_remote,
};
pub use wire::{Snapshot, StreamEvent, parse_event};

/// What the event loop should do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

/// The six views, in `Tab` order; top opens on the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum View {
    Incidents,
    Findings,
    Connections,
    Listeners,
    Owners,
    /// The exposure audit (`docs/exposure.md`).
    Exposure,
}

impl View {
    pub const ALL: [View; 6] = [
        View::Incidents,
        View::Findings,
        View::Connections,
        View::Listeners,
        View::Owners,
        View::Exposure,
    ];

    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Self::Incidents => "Incidents",
            Self::Findings => "Findings",
            Self::Connections => "Connections",
            Self::Listeners => "Listeners",
            Self::Owners => "Owners",
            Self::Exposure => "Exposure",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Incidents => 0,
            Self::Findings => 1,
            Self::Connections => 2,
            Self::Listeners => 3,
            Self::Owners => 4,
            Self::Exposure => 5,
        }
    }
}

/// What the table shows: a view, or the members of one incident (entered from the Incidents
/// view with Enter). Each pane keeps its own selection and sort.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pane {
    View(View),
    Members,
}

impl Pane {
    fn index(self) -> usize {
        match self {
            Self::View(v) => v.index(),
            Self::Members => View::ALL.len(),
        }
    }

    /// Sort orders offered by `s`, in cycling order; the first is the default.
    #[must_use]
    pub fn sorts(self) -> &'static [SortKey] {
        match self {
            Self::View(View::Incidents) => &[
                SortKey::Severity,
                SortKey::Age,
                SortKey::Members,
                SortKey::Kind,
            ],
            Self::View(View::Findings) | Self::Members => {
                &[SortKey::Severity, SortKey::Age, SortKey::Kind]
            }
            Self::View(View::Connections) => &[
                SortKey::SendQ,
                SortKey::State,
                SortKey::Local,
                SortKey::Remote,
                SortKey::Owner,
                SortKey::RecvQ,
                SortKey::Age,
                SortKey::Chain,
                SortKey::Backoff,
                SortKey::Rtt,
            ],
            Self::View(View::Listeners) => {
                &[SortKey::AcceptFill, SortKey::Unaccepted, SortKey::Local]
            }
            Self::View(View::Owners) => &[
                SortKey::Sockets,
                SortKey::StuckCloseWait,
                SortKey::SendQ,
                SortKey::Owner,
            ],
            Self::View(View::Exposure) => &[
                SortKey::Worst,
                SortKey::Exposed,
                SortKey::Owner,
                SortKey::Remote,
            ],
        }
    }
}

const PANES: usize = View::ALL.len() + 1;

/// A sort order. Numbers sort largest first, text and addresses ascending, ages oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    Severity,
    Kind,
    State,
    Local,
    Remote,
    Owner,
    SendQ,
    RecvQ,
    Age,
    Chain,
    Backoff,
    Rtt,
    AcceptFill,
    Unaccepted,
    Sockets,
    StuckCloseWait,
    Members,
    Worst,
    Exposed,
}

impl SortKey {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Severity => "severity",
            Self::Kind => "kind",
            Self::State => "state",
            Self::Local => "local",
            Self::Remote => "remote",
            Self::Owner => "owner",
            Self::SendQ => "Send-Q",
            Self::RecvQ => "Recv-Q",
            Self::Age => "age",
            Self::Chain => "retransmit chain",
            Self::Backoff => "backoff",
            Self::Rtt => "RTT",
            Self::AcceptFill => "accept queue",
            Self::Unaccepted => "unaccepted",
            Self::Sockets => "sockets",
            Self::StuckCloseWait => "stuck CLOSE_WAIT",
            Self::Members => "members",
            Self::Worst => "worst case",
            Self::Exposed => "exposed",
        }
    }
}

/// Identity of a row, kept across re-sorts so the selection follows its row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RowId {
    Incident(String),
    Finding(String),
    Conn(ConnKey),
    Owner(String),
    /// An Exposure row: [`exposure_key`] of its group.
    Exposure(String),
}

/// One line of the Owners view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerRow {
    /// `comm[pid]`, or `-` for sockets no process holds.
    pub name: String,
    pub pid: Option<u32>,
    pub sockets: u64,
    pub established: u64,
    pub listen: u64,
    pub close_wait: u64,
    /// `CLOSE_WAIT` sockets with an open `close_wait_stuck` finding.
    pub stuck_close_wait: u64,
    pub time_wait: u64,
    pub other: u64,
    pub send_q_total: u64,
}

/// The rows of the current pane, in display order.
#[derive(Debug, Default)]
struct Rows {
    ids: Vec<RowId>,
    /// Owners view only: the aggregated rows, parallel to `ids`.
    owners: Vec<OwnerRow>,
    /// Exposure view only: the audit's groups, parallel to `ids`.
    exposure: Vec<tcpwatch_core::exposure::ExposureGroup>,
}

#[derive(Debug, Default, Clone)]
struct Cursor {
    selected: usize,
    offset: usize,
    selected_id: Option<RowId>,
    sort: usize,
}

/// Buffered input while paused.
#[derive(Debug)]
enum Pending {
    Snapshot(Snapshot),
    Event(StreamEvent),
}

/// The text of the detail pane, plus the series for its sparklines.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detail {
    pub title: String,
    pub lines: Vec<String>,
    pub send_q: Vec<u64>,
    pub retrans: Vec<u64>,
}

/// Stream events that did not parse: counted and shown, never skipped silently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BadEvents {
    pub count: u64,
    /// The last parse error, shortened.
    pub last_error: String,
}

/// The whole UI state.
#[derive(Debug)]
#[expect(clippy::struct_excessive_bools, reason = "independent UI toggles")]
pub struct App {
    /// Header label: the daemon's address, or `standalone`.
    pub source: String,
    /// Connection status shown in the header (`connected`, `reconnecting: ...`).
    pub status: String,
    conns: HashMap<ConnKey, ConnRecord>,
    findings: HashMap<String, Finding>,
    incidents: HashMap<String, Incident>,
    /// `false` when the daemon answered 404 to `/api/v1/incidents` (older daemon).
    incidents_served: bool,
    /// The last exposure audit (`None`: not received, or not served by this daemon).
    exposure: Option<tcpwatch_core::api::ExposureBody>,
    /// The host's `TIME_WAIT` sockets, counted by the daemon (`None`: not received yet).
    time_wait: Option<u64>,
    bad_events: BadEvents,
    view: View,
    /// The incident whose members the Incidents view shows (Enter on an incident).
    focus: Option<String>,
    cursors: [Cursor; PANES],
    rows: Rows,
    rows_pane: Option<Pane>,
    dirty: bool,
    filter: String,
    editing_filter: bool,
    detail: bool,
    help: bool,
    paused: bool,
    pending: Vec<Pending>,
    /// Rows that fit in the table at the last render (for PgUp/PgDn).
    page: usize,
    /// (netns cookie, local port) -> unaccepted `CLOSE_WAIT` sockets, for the Listeners view.
    unaccepted: HashMap<(u64, u16), u64>,
}

impl App {
    #[must_use]
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            status: String::new(),
            conns: HashMap::new(),
            findings: HashMap::new(),
            incidents: HashMap::new(),
            incidents_served: true,
            exposure: None,
            time_wait: None,
            bad_events: BadEvents::default(),
            view: View::Incidents,
            focus: None,
            cursors: Default::default(),
            rows: Rows::default(),
            rows_pane: None,
            dirty: true,
            filter: String::new(),
            editing_filter: false,
            detail: false,
            help: false,
            paused: false,
            pending: Vec::new(),
            page: 20,
            unaccepted: HashMap::new(),
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "state_incidents_tests.rs"]
pub(crate) mod incidents_tests;

#[cfg(test)]
#[path = "state_exposure_tests.rs"]
pub(crate) mod exposure_tests;
