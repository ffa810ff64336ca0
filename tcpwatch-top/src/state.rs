//! The pure UI state of `tcpwatch top`: data, views, sorting, filtering, selection and keys.
//!
//! Nothing here reads the clock or touches the terminal: time is passed in as [`MonoNs`] and
//! keys as crossterm [`KeyEvent`]s, so every behaviour is unit-testable.
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde::Deserialize;
use tcpwatch_core::model::{
    ConnKey, ConnRecord, Finding, FindingChange, FindingKind, Lifecycle, MonoNs, Owner, Severity,
    Subject, TcpState,
};
use tcpwatch_core::render::{format_age, format_owner, ss_queues};

/// One event of the daemon's `/api/v1/stream` (the daemon's `StreamEvent`, as received).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    Conn(ConnDelta),
    Finding(Box<FindingChange>),
    /// The daemon dropped `missed` events for this subscriber: the client must resync.
    Lagged {
        missed: u64,
    },
}

/// A change of the daemon's connection table (`tcpwatch_core::table::Delta`, as received).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ConnDelta {
    Upsert { conn: Box<ConnRecord> },
    Remove { key: ConnKey },
}

/// What the event loop should do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

/// The four views, in `Tab` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum View {
    Findings,
    Connections,
    Listeners,
    Owners,
}

impl View {
    pub const ALL: [View; 4] = [
        View::Findings,
        View::Connections,
        View::Listeners,
        View::Owners,
    ];

    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Self::Findings => "Findings",
            Self::Connections => "Connections",
            Self::Listeners => "Listeners",
            Self::Owners => "Owners",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Findings => 0,
            Self::Connections => 1,
            Self::Listeners => 2,
            Self::Owners => 3,
        }
    }

    /// Sort orders offered by `s`, in cycling order; the first is the default.
    #[must_use]
    pub fn sorts(self) -> &'static [SortKey] {
        match self {
            Self::Findings => &[SortKey::Severity, SortKey::Age, SortKey::Kind],
            Self::Connections => &[
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
            Self::Listeners => &[SortKey::AcceptFill, SortKey::Unaccepted, SortKey::Local],
            Self::Owners => &[
                SortKey::Sockets,
                SortKey::StuckCloseWait,
                SortKey::SendQ,
                SortKey::Owner,
            ],
        }
    }
}

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
        }
    }
}

/// Identity of a row, kept across re-sorts so the selection follows its row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RowId {
    Finding(String),
    Conn(ConnKey),
    Owner(String),
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

/// The rows of the current view, in display order.
#[derive(Debug, Default)]
struct Rows {
    ids: Vec<RowId>,
    /// Owners view only: the aggregated rows, parallel to `ids`.
    owners: Vec<OwnerRow>,
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
    Snapshot(Vec<ConnRecord>, Vec<Finding>),
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
    view: View,
    cursors: [Cursor; 4],
    rows: Rows,
    rows_view: Option<View>,
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
            view: View::Findings,
            cursors: Default::default(),
            rows: Rows::default(),
            rows_view: None,
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

    // ---- data ----------------------------------------------------------------------------

    /// Replaces all data (initial load or resync).
    pub fn apply_snapshot(&mut self, conns: Vec<ConnRecord>, findings: Vec<Finding>) {
        if self.paused {
            self.pending.clear();
            self.pending.push(Pending::Snapshot(conns, findings));
            return;
        }
        self.conns = conns.into_iter().map(|c| (c.key, c)).collect();
        self.findings = findings
            .into_iter()
            .filter(|f| f.resolved_at.is_none())
            .map(|f| (f.id.clone(), f))
            .collect();
        self.dirty = true;
    }

    /// Applies one stream event (buffered while paused).
    pub fn apply_stream_event(&mut self, ev: StreamEvent) {
        if self.paused {
            self.pending.push(Pending::Event(ev));
            return;
        }
        match ev {
            StreamEvent::Conn(ConnDelta::Upsert { conn }) => {
                self.conns.insert(conn.key, *conn);
            }
            StreamEvent::Conn(ConnDelta::Remove { key }) => {
                self.conns.remove(&key);
            }
            StreamEvent::Finding(fc) => match fc.change {
                Lifecycle::Opened | Lifecycle::Updated => {
                    self.findings.insert(fc.finding.id.clone(), fc.finding);
                }
                Lifecycle::Resolved => {
                    self.findings.remove(&fc.finding.id);
                }
            },
            StreamEvent::Lagged { .. } => return,
        }
        self.dirty = true;
    }

    fn set_paused(&mut self, paused: bool) {
        if paused == self.paused {
            return;
        }
        self.paused = paused;
        if !paused {
            for p in std::mem::take(&mut self.pending) {
                match p {
                    Pending::Snapshot(c, f) => self.apply_snapshot(c, f),
                    Pending::Event(e) => self.apply_stream_event(e),
                }
            }
        }
    }

    #[must_use]
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Updates waiting to be applied while paused (a buffered snapshot counts as one).
    #[must_use]
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    #[must_use]
    pub fn connection(&self, key: &ConnKey) -> Option<&ConnRecord> {
        self.conns.get(key)
    }

    #[must_use]
    pub fn finding(&self, id: &str) -> Option<&Finding> {
        self.findings.get(id)
    }

    /// Open findings by severity: (critical, warning, info).
    #[must_use]
    pub fn severity_counts(&self) -> (usize, usize, usize) {
        let n = |s| self.findings.values().filter(|f| f.severity == s).count();
        (
            n(Severity::Critical),
            n(Severity::Warning),
            n(Severity::Info),
        )
    }

    /// All connections, sorted by key (for `--once --json`).
    #[must_use]
    pub fn all_connections(&self) -> Vec<&ConnRecord> {
        let mut v: Vec<&ConnRecord> = self.conns.values().collect();
        v.sort_by_key(|c| c.key);
        v
    }

    /// Open findings, by severity then age.
    #[must_use]
    pub fn all_findings(&self) -> Vec<&Finding> {
        let mut v: Vec<&Finding> = self.findings.values().collect();
        v.sort_by(|a, b| cmp_findings(a, b, SortKey::Severity));
        v
    }

    // ---- view state ----------------------------------------------------------------------

    #[must_use]
    pub fn view(&self) -> View {
        self.view
    }

    pub fn set_view(&mut self, v: View) {
        self.view = v;
    }

    #[must_use]
    pub fn filter(&self) -> &str {
        &self.filter
    }

    #[must_use]
    pub fn editing_filter(&self) -> bool {
        self.editing_filter
    }

    #[must_use]
    pub fn detail_open(&self) -> bool {
        self.detail
    }

    #[must_use]
    pub fn help_open(&self) -> bool {
        self.help
    }

    #[must_use]
    pub fn sort_key(&self) -> SortKey {
        let sorts = self.view.sorts();
        sorts[self.cursor().sort % sorts.len()]
    }

    fn cursor(&self) -> &Cursor {
        &self.cursors[self.view.index()]
    }

    fn cursor_mut(&mut self) -> &mut Cursor {
        &mut self.cursors[self.view.index()]
    }

    /// Index of the selected row in the current view.
    pub fn selected(&mut self) -> usize {
        self.ensure_rows();
        self.cursor().selected
    }

    /// First visible row.
    #[must_use]
    pub fn offset(&self) -> usize {
        self.cursor().offset
    }

    /// The selected row's identity.
    #[must_use]
    pub fn selected_id(&mut self) -> Option<RowId> {
        self.ensure_rows();
        self.rows.ids.get(self.cursor().selected).cloned()
    }

    /// Rows of the current view, after filter and sort.
    pub fn row_count(&mut self) -> usize {
        self.ensure_rows();
        self.rows.ids.len()
    }

    /// The current view's rows `[from, from + n)`.
    pub fn visible_ids(&mut self, from: usize, n: usize) -> &[RowId] {
        self.ensure_rows();
        let ids = &self.rows.ids;
        let from = from.min(ids.len());
        let to = from.saturating_add(n).min(ids.len());
        &ids[from..to]
    }

    /// Owners view: the aggregated row at `i`.
    #[must_use]
    pub fn owner_row(&self, i: usize) -> Option<&OwnerRow> {
        self.rows.owners.get(i)
    }

    /// Listeners view: unaccepted `CLOSE_WAIT` sockets on the listener's namespace and port.
    #[must_use]
    pub fn unaccepted_for(&self, c: &ConnRecord) -> u64 {
        self.unaccepted
            .get(&(c.key.netns_cookie, c.local.port()))
            .copied()
            .unwrap_or(0)
    }

    /// Tells the state how many rows the table shows, and scrolls so the selection is visible.
    pub fn set_page(&mut self, rows: usize) {
        self.page = rows.max(1);
        self.ensure_rows();
        let page = self.page;
        let c = self.cursor_mut();
        if c.selected < c.offset {
            c.offset = c.selected;
        } else if c.selected >= c.offset + page {
            c.offset = c.selected + 1 - page;
        }
    }

    // ---- rows ----------------------------------------------------------------------------

    /// Rebuilds the current view's rows if data, filter or sort changed (at most once per
    /// render: deltas only set a flag).
    pub fn ensure_rows(&mut self) {
        if !self.dirty && self.rows_view == Some(self.view) {
            return;
        }
        let filter = self.filter.to_lowercase();
        let sort = self.sort_key();
        let mut owners = Vec::new();
        let ids: Vec<RowId> = match self.view {
            View::Findings => {
                let mut v: Vec<&Finding> = self
                    .findings
                    .values()
                    .filter(|f| finding_matches(f, &filter))
                    .collect();
                v.sort_by(|a, b| cmp_findings(a, b, sort));
                v.into_iter()
                    .map(|f| RowId::Finding(f.id.clone()))
                    .collect()
            }
            View::Connections => {
                let mut v: Vec<&ConnRecord> = self
                    .conns
                    .values()
                    .filter(|c| conn_matches(c, &filter))
                    .collect();
                v.sort_by(|a, b| cmp_conns(a, b, sort));
                v.into_iter().map(|c| RowId::Conn(c.key)).collect()
            }
            View::Listeners => {
                let mut un: HashMap<(u64, u16), u64> = HashMap::new();
                for c in self.conns.values() {
                    if c.state == TcpState::CloseWait && c.inode == 0 {
                        *un.entry((c.key.netns_cookie, c.local.port())).or_default() += 1;
                    }
                }
                let unacc = |c: &ConnRecord| {
                    un.get(&(c.key.netns_cookie, c.local.port()))
                        .copied()
                        .unwrap_or(0)
                };
                let mut v: Vec<&ConnRecord> = self
                    .conns
                    .values()
                    .filter(|c| c.state == TcpState::Listen && conn_matches(c, &filter))
                    .collect();
                v.sort_by(|a, b| {
                    let o = match sort {
                        SortKey::Unaccepted => unacc(b).cmp(&unacc(a)),
                        SortKey::Local => Ordering::Equal,
                        _ => accept_fill(b).total_cmp(&accept_fill(a)),
                    };
                    o.then_with(|| a.local.cmp(&b.local))
                        .then_with(|| a.key.cmp(&b.key))
                });
                let ids = v.into_iter().map(|c| RowId::Conn(c.key)).collect();
                self.unaccepted = un;
                ids
            }
            View::Owners => {
                let v = self.owner_rows(&filter, sort);
                let ids = v.iter().map(|r| RowId::Owner(r.name.clone())).collect();
                owners = v;
                ids
            }
        };
        self.rows = Rows { ids, owners };
        self.rows_view = Some(self.view);
        self.dirty = false;
        // Keep the selection on the same row when it is still there.
        let n = self.rows.ids.len();
        let found = self
            .cursor()
            .selected_id
            .as_ref()
            .and_then(|id| self.rows.ids.iter().position(|r| r == id));
        let c = &mut self.cursors[self.view.index()];
        c.selected = found.unwrap_or(c.selected).min(n.saturating_sub(1));
        c.selected_id = self.rows.ids.get(c.selected).cloned();
        c.offset = c.offset.min(c.selected);
    }

    /// The Owners view: sockets aggregated per process, filtered and sorted.
    fn owner_rows(&self, filter: &str, sort: SortKey) -> Vec<OwnerRow> {
        let flagged: HashSet<ConnKey> = self
            .findings
            .values()
            .filter(|f| f.kind == FindingKind::CloseWaitStuck)
            .filter_map(|f| subject_key(&f.subject))
            .collect();
        let mut by: HashMap<String, OwnerRow> = HashMap::new();
        for c in self.conns.values() {
            let name = format_owner(c.owner.as_ref());
            let r = by.entry(name.clone()).or_insert_with(|| OwnerRow {
                name,
                pid: c.owner.as_ref().map(|o| o.pid),
                ..OwnerRow::default()
            });
            r.sockets += 1;
            match c.state {
                TcpState::Established => r.established += 1,
                TcpState::Listen => r.listen += 1,
                TcpState::CloseWait => {
                    r.close_wait += 1;
                    if flagged.contains(&c.key) {
                        r.stuck_close_wait += 1;
                    }
                }
                TcpState::TimeWait => r.time_wait += 1,
                _ => r.other += 1,
            }
            r.send_q_total += u64::from(c.queues.send_q);
        }
        let mut v: Vec<OwnerRow> = by
            .into_values()
            .filter(|r| filter.is_empty() || r.name.to_lowercase().contains(filter))
            .collect();
        v.sort_by(|a, b| {
            let o = match sort {
                SortKey::StuckCloseWait => b
                    .stuck_close_wait
                    .cmp(&a.stuck_close_wait)
                    .then(b.close_wait.cmp(&a.close_wait)),
                SortKey::SendQ => b.send_q_total.cmp(&a.send_q_total),
                SortKey::Owner => Ordering::Equal,
                _ => b.sockets.cmp(&a.sockets),
            };
            o.then_with(|| a.name.cmp(&b.name))
        });
        v
    }

    fn move_to(&mut self, target: usize) {
        self.ensure_rows();
        let n = self.rows.ids.len();
        let page = self.page;
        let sel = target.min(n.saturating_sub(1));
        let id = self.rows.ids.get(sel).cloned();
        let c = self.cursor_mut();
        c.selected = sel;
        c.selected_id = id;
        if c.selected < c.offset {
            c.offset = c.selected;
        } else if c.selected >= c.offset + page {
            c.offset = c.selected + 1 - page;
        }
    }

    // ---- keys ----------------------------------------------------------------------------

    /// Handles one key. Pure: no I/O.
    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Continue;
        }
        // In raw mode Ctrl-C is a key: always quit.
        if key.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(key.code, KeyCode::Char('c' | 'C'))
        {
            return Action::Quit;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.set_filter(String::new());
                }
                KeyCode::Backspace => {
                    let mut f = self.filter.clone();
                    f.pop();
                    self.set_filter(f);
                }
                KeyCode::Char(ch) => {
                    let mut f = self.filter.clone();
                    f.push(ch);
                    self.set_filter(f);
                }
                _ => {}
            }
            return Action::Continue;
        }
        if self.help {
            if matches!(key.code, KeyCode::Char('q')) {
                return Action::Quit;
            }
            self.help = false;
            return Action::Continue;
        }
        let sel = self.cursor().selected;
        let page = self.page;
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('/') => self.editing_filter = true,
            KeyCode::Char('p') => self.set_paused(!self.paused),
            KeyCode::Char('s') => {
                let n = self.view.sorts().len();
                let c = self.cursor_mut();
                c.sort = (c.sort + 1) % n;
                self.dirty = true;
            }
            KeyCode::Tab => self.switch_view(1),
            KeyCode::BackTab => self.switch_view(View::ALL.len() - 1),
            KeyCode::Enter => self.detail = !self.detail,
            KeyCode::Esc => {
                if self.detail {
                    self.detail = false;
                } else if !self.filter.is_empty() {
                    self.set_filter(String::new());
                }
            }
            KeyCode::Down | KeyCode::Char('j') => self.move_to(sel.saturating_add(1)),
            KeyCode::Up | KeyCode::Char('k') => self.move_to(sel.saturating_sub(1)),
            KeyCode::PageDown => self.move_to(sel.saturating_add(page)),
            KeyCode::PageUp => self.move_to(sel.saturating_sub(page)),
            KeyCode::Home | KeyCode::Char('g') => self.move_to(0),
            KeyCode::End | KeyCode::Char('G') => self.move_to(usize::MAX),
            _ => {}
        }
        Action::Continue
    }

    fn switch_view(&mut self, step: usize) {
        let i = (self.view.index() + step) % View::ALL.len();
        self.view = View::ALL[i];
    }

    /// Sets the `/` filter (applies to every view).
    pub fn set_filter(&mut self, f: String) {
        if f != self.filter {
            self.filter = f;
            self.dirty = true;
        }
    }

    // ---- detail pane ---------------------------------------------------------------------

    /// The detail pane's content for the selected row, if any.
    pub fn detail(&mut self, now: MonoNs) -> Option<Detail> {
        let id = self.selected_id()?;
        match id {
            RowId::Finding(fid) => {
                let f = self.findings.get(&fid)?;
                let mut d = Detail {
                    title: format!("{} {}", f.severity.name(), f.kind.name()),
                    ..Detail::default()
                };
                finding_lines(f, now, &mut d.lines);
                if let Some(c) = subject_key(&f.subject).and_then(|k| self.conns.get(&k)) {
                    d.lines.push(String::new());
                    conn_lines(c, now, &mut d.lines);
                    series(c, &mut d);
                }
                Some(d)
            }
            RowId::Conn(key) => {
                let c = self.conns.get(&key)?;
                let mut d = Detail {
                    title: format!("{} {} -> {}", c.state.ss_name(), c.local, c.remote),
                    ..Detail::default()
                };
                conn_lines(c, now, &mut d.lines);
                if c.state == TcpState::Listen {
                    d.lines.push(format!(
                        "unaccepted CLOSE_WAIT on port {}: {}",
                        c.local.port(),
                        self.count_unaccepted(c)
                    ));
                }
                let mut fs: Vec<&Finding> = self
                    .findings
                    .values()
                    .filter(|f| subject_key(&f.subject) == Some(key))
                    .collect();
                fs.sort_by(|a, b| cmp_findings(a, b, SortKey::Severity));
                for f in fs {
                    d.lines.push(String::new());
                    finding_lines(f, now, &mut d.lines);
                }
                series(c, &mut d);
                Some(d)
            }
            RowId::Owner(name) => {
                let i = self
                    .rows
                    .ids
                    .iter()
                    .position(|r| *r == RowId::Owner(name.clone()))?;
                let r = self.rows.owners.get(i)?;
                let mut lines = vec![
                    format!("owner: {}", r.name),
                    format!(
                        "sockets: {} (ESTAB {}, LISTEN {}, CLOSE-WAIT {} of which stuck {}, \
                         TIME-WAIT {}, other {})",
                        r.sockets,
                        r.established,
                        r.listen,
                        r.close_wait,
                        r.stuck_close_wait,
                        r.time_wait,
                        r.other
                    ),
                    format!("Send-Q total: {} bytes", r.send_q_total),
                    String::new(),
                    "largest Send-Q:".to_owned(),
                ];
                let mut mine: Vec<&ConnRecord> = self
                    .conns
                    .values()
                    .filter(|c| format_owner(c.owner.as_ref()) == name)
                    .collect();
                mine.sort_by(|a, b| cmp_conns(a, b, SortKey::SendQ));
                for c in mine.into_iter().take(10) {
                    let (rq, sq) = ss_queues(c);
                    lines.push(format!(
                        "  {:<10} {:>10} {:>10} {} -> {} {}",
                        c.state.ss_name(),
                        rq,
                        sq,
                        c.local,
                        c.remote,
                        format_age(c.state_age(now), c.state_since_exact)
                    ));
                }
                Some(Detail {
                    title: name.clone(),
                    lines,
                    ..Detail::default()
                })
            }
        }
    }

    fn count_unaccepted(&self, l: &ConnRecord) -> usize {
        self.conns
            .values()
            .filter(|c| {
                c.state == TcpState::CloseWait
                    && c.inode == 0
                    && c.key.netns_cookie == l.key.netns_cookie
                    && c.local.port() == l.local.port()
            })
            .count()
    }
}

// ---- helpers ---------------------------------------------------------------------------------

/// The connection a finding is about, if it names one.
#[must_use]
pub fn subject_key(s: &Subject) -> Option<ConnKey> {
    match s {
        Subject::Connection { key, .. } | Subject::Listener { key, .. } => Some(*key),
        Subject::Port { .. } | Subject::Peer { .. } => None,
    }
}

/// `local` of a finding's subject, as text (`*:PORT` for a port subject).
#[must_use]
pub fn subject_local(s: &Subject) -> String {
    match s {
        Subject::Connection { local, .. } | Subject::Listener { local, .. } => local.to_string(),
        Subject::Port { port, .. } => format!("*:{port}"),
        Subject::Peer { .. } => "-".to_owned(),
    }
}

#[must_use]
pub fn subject_remote(s: &Subject) -> String {
    match s {
        Subject::Connection { remote, .. } | Subject::Peer { remote, .. } => remote.to_string(),
        Subject::Listener { .. } | Subject::Port { .. } => "-".to_owned(),
    }
}

#[must_use]
pub fn subject_owner(s: &Subject) -> Option<&Owner> {
    match s {
        Subject::Connection { owner, .. }
        | Subject::Listener { owner, .. }
        | Subject::Peer { owner, .. } => owner.as_ref(),
        Subject::Port { .. } => None,
    }
}

/// Accept queue fill of a listener, 0.0 to 1.0 (and above when overflowing).
#[must_use]
pub fn accept_fill(c: &ConnRecord) -> f64 {
    if c.queues.accept_limit == 0 {
        return if c.queues.accept_queue > 0 { 1.0 } else { 0.0 };
    }
    f64::from(c.queues.accept_queue) / f64::from(c.queues.accept_limit)
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_lowercase().contains(needle)
}

fn addr_matches(a: &SocketAddr, needle: &str) -> bool {
    a.to_string().contains(needle)
}

/// Substring match on port, address, comm and state (`needle` already lowercase).
fn conn_matches(c: &ConnRecord, needle: &str) -> bool {
    needle.is_empty()
        || addr_matches(&c.local, needle)
        || addr_matches(&c.remote, needle)
        || c.owner
            .as_ref()
            .is_some_and(|o| contains_ci(&o.comm, needle) || o.pid.to_string() == needle)
        || c.creator_comm
            .as_deref()
            .is_some_and(|cc| contains_ci(cc, needle))
        || contains_ci(c.state.name(), needle)
        || contains_ci(c.state.ss_name(), needle)
}

fn finding_matches(f: &Finding, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let state = match &f.subject {
        Subject::Connection { state, .. } => Some(*state),
        Subject::Listener { .. } => Some(TcpState::Listen),
        Subject::Port { .. } | Subject::Peer { .. } => None,
    };
    subject_local(&f.subject).contains(needle)
        || subject_remote(&f.subject).contains(needle)
        || subject_owner(&f.subject).is_some_and(|o| contains_ci(&o.comm, needle))
        || state.is_some_and(|s| contains_ci(s.name(), needle) || contains_ci(s.ss_name(), needle))
        || f.kind.name().contains(needle)
        || f.severity.name().contains(needle)
}

fn cmp_findings(a: &Finding, b: &Finding, sort: SortKey) -> Ordering {
    let sev = b.severity.cmp(&a.severity);
    let age = a.since.cmp(&b.since);
    let o = match sort {
        SortKey::Age => age.then(sev),
        SortKey::Kind => a.kind.cmp(&b.kind).then(sev).then(age),
        _ => sev.then(age),
    };
    o.then_with(|| a.id.cmp(&b.id))
}

fn owner_name(c: &ConnRecord) -> (&str, u32) {
    c.owner
        .as_ref()
        .map_or(("\u{10ffff}", 0), |o| (o.comm.as_str(), o.pid))
}

fn cmp_conns(a: &ConnRecord, b: &ConnRecord, sort: SortKey) -> Ordering {
    let o = match sort {
        SortKey::State => a.state.cmp(&b.state),
        SortKey::Local => a.local.cmp(&b.local),
        SortKey::Remote => a.remote.cmp(&b.remote),
        SortKey::Owner => owner_name(a).cmp(&owner_name(b)),
        SortKey::RecvQ => ss_queues(b).0.cmp(&ss_queues(a).0),
        SortKey::Age => a.state_since.cmp(&b.state_since),
        SortKey::Chain => b.retrans.chain.cmp(&a.retrans.chain),
        SortKey::Backoff => b.tcp.backoff.cmp(&a.tcp.backoff),
        SortKey::Rtt => b.tcp.srtt_us.cmp(&a.tcp.srtt_us),
        // Real Send-Q (a listener's ss "Send-Q" is its backlog limit, not data).
        _ => b.queues.send_q.cmp(&a.queues.send_q),
    };
    o.then_with(|| a.local.cmp(&b.local))
        .then_with(|| a.remote.cmp(&b.remote))
        .then_with(|| a.key.cmp(&b.key))
}

fn series(c: &ConnRecord, d: &mut Detail) {
    d.send_q = c.history.iter().map(|s| u64::from(s.send_q)).collect();
    d.retrans = c
        .history
        .iter()
        .map(|s| u64::from(s.retrans_total))
        .collect();
}

fn ms_ago(now: MonoNs, t: MonoNs) -> String {
    format_age(now.saturating_sub(t), true) + " ago"
}

fn finding_lines(f: &Finding, now: MonoNs, out: &mut Vec<String>) {
    out.push(format!(
        "finding {} [{}] {} cause={}",
        f.id,
        f.severity.name(),
        f.kind.name(),
        f.cause
    ));
    out.push(format!("diagnosis: {}", f.diagnosis));
    out.push(format!(
        "since {}  opened {}  updated {}  subject {} -> {} owner {}",
        ms_ago(now, f.since),
        ms_ago(now, f.opened_at),
        ms_ago(now, f.updated_at),
        subject_local(&f.subject),
        subject_remote(&f.subject),
        format_owner(subject_owner(&f.subject)),
    ));
    if !f.evidence.is_empty() {
        let mut ev = String::from("evidence:");
        for (k, v) in &f.evidence {
            let _ = write!(ev, " {k}={v}");
        }
        out.push(ev);
    }
}

fn conn_lines(c: &ConnRecord, now: MonoNs, out: &mut Vec<String>) {
    let o = c.owner.as_ref();
    out.push(format!(
        "{} {} -> {}  state age {}  netns {} (cookie {})",
        c.state.name(),
        c.local,
        c.remote,
        format_age(c.state_age(now), c.state_since_exact),
        c.netns.inode,
        c.netns.cookie
    ));
    out.push(format!(
        "owner {} fd {} container {} pod {}  creator {}[{}]  inode {} uid {}",
        format_owner(o),
        o.and_then(|o| o.fd)
            .map_or_else(|| "-".to_owned(), |fd| fd.to_string()),
        o.and_then(|o| o.container_id.as_deref()).unwrap_or("-"),
        o.and_then(|o| o.pod.as_ref())
            .map_or_else(|| "-".to_owned(), |p| format!("{}/{}", p.namespace, p.name)),
        c.creator_comm.as_deref().unwrap_or("-"),
        c.creator_pid
            .map_or_else(|| "-".to_owned(), |p| p.to_string()),
        c.inode,
        c.uid
    ));
    let q = &c.queues;
    out.push(format!(
        "Send-Q {} (unacked {}, unsent {})  Recv-Q {}  accept {}/{}",
        q.send_q, q.unacked, q.unsent, q.recv_q, q.accept_queue, q.accept_limit
    ));
    let t = &c.tcp;
    out.push(format!(
        "rtt {:.1}ms rto {}ms backoff {} retransmits {} probes {} total_retrans {}  peer window {}",
        f64::from(t.srtt_us) / 1000.0,
        t.rto_ms,
        t.backoff,
        t.retransmits,
        t.probes_out,
        t.total_retrans,
        t.peer_window
    ));
    out.push(format!(
        "user_timeout {}ms sndbuf {} wmem_queued {}  last send/ack/recv {}/{}/{} ms ago",
        t.user_timeout_ms,
        t.sndbuf,
        t.wmem_queued,
        t.last_send_age_ms,
        t.last_ack_age_ms,
        t.last_recv_age_ms
    ));
    out.push(format!(
        "retrans chain {} total {}{}{}  resets sent {} received {}  full_sock {}",
        c.retrans.chain,
        c.retrans.total,
        c.retrans
            .chain_start
            .map_or_else(String::new, |s| format!(" chain since {}", ms_ago(now, s))),
        c.retrans
            .last_retrans
            .map_or_else(String::new, |s| format!(" last {}", ms_ago(now, s))),
        c.resets.sent,
        c.resets.received,
        c.full_sock
    ));
    out.push(format!(
        "first seen {}  last seen {}",
        ms_ago(now, c.first_seen),
        ms_ago(now, c.last_seen)
    ));
}

/// Age of a finding's condition.
#[must_use]
pub fn finding_age(f: &Finding, now: MonoNs) -> String {
    format_age(now.saturating_sub(f.since), true)
}

#[cfg(test)]
#[path = "state_tests.rs"]
pub(crate) mod tests;
