//! View state and rows: which pane the table shows, its rows after filter and sort, and the
//! selection (which follows its row across re-sorts).
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use tcpwatch_core::incident::Incident;
use tcpwatch_core::model::{ConnKey, ConnRecord, Finding, FindingKind, TcpState};
use tcpwatch_core::render::format_owner;

use super::order::{
    accept_fill, cmp_conns, cmp_findings, cmp_incidents, conn_matches, finding_matches,
    incident_matches, subject_key,
};
use super::{App, Cursor, OwnerRow, Pane, RowId, Rows, SortKey, View};

impl App {
    #[must_use]
    pub fn view(&self) -> View {
        self.view
    }

    /// Switches the view (leaves an incident's member list).
    pub fn set_view(&mut self, v: View) {
        self.view = v;
        self.focus = None;
    }

    /// What the table shows now.
    #[must_use]
    pub fn pane(&self) -> Pane {
        match (self.view, &self.focus) {
            (View::Incidents, Some(_)) => Pane::Members,
            (v, _) => Pane::View(v),
        }
    }

    /// The incident whose members are listed (Incidents view after Enter).
    #[must_use]
    pub fn focus(&self) -> Option<&str> {
        self.focus.as_deref()
    }

    /// Lists the members of `incident_id` (what Enter on an incident does).
    pub fn enter_incident(&mut self, incident_id: String) {
        self.view = View::Incidents;
        self.focus = Some(incident_id);
        self.cursors[Pane::Members.index()] = Cursor::default();
        self.detail = false;
        self.dirty = true;
    }

    /// Back from the member list to the incident list.
    pub fn leave_incident(&mut self) {
        if self.focus.take().is_some() {
            self.detail = false;
            self.dirty = true;
        }
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
        let sorts = self.pane().sorts();
        sorts[self.cursor().sort % sorts.len()]
    }

    pub(super) fn cursor(&self) -> &Cursor {
        &self.cursors[self.pane().index()]
    }

    pub(super) fn cursor_mut(&mut self) -> &mut Cursor {
        let i = self.pane().index();
        &mut self.cursors[i]
    }

    /// Index of the selected row in the current pane.
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

    /// Rows of the current pane, after filter and sort.
    pub fn row_count(&mut self) -> usize {
        self.ensure_rows();
        self.rows.ids.len()
    }

    /// The current pane's rows `[from, from + n)`.
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

    /// Rebuilds the current pane's rows if data, filter or sort changed (at most once per
    /// render: deltas only set a flag).
    pub fn ensure_rows(&mut self) {
        let pane = self.pane();
        if !self.dirty && self.rows_pane == Some(pane) {
            return;
        }
        let filter = self.filter.to_lowercase();
        let sort = self.sort_key();
        let mut owners = Vec::new();
        let mut exposure = Vec::new();
        let ids: Vec<RowId> = match pane {
            Pane::View(View::Incidents) => {
                let mut v: Vec<&Incident> = self
                    .incidents
                    .values()
                    .filter(|i| incident_matches(i, &filter))
                    .collect();
                v.sort_by(|a, b| cmp_incidents(a, b, sort));
                v.into_iter()
                    .map(|i| RowId::Incident(i.id.clone()))
                    .collect()
            }
            Pane::Members => {
                // Not filtered: the filter chose the incident, its members are the evidence.
                let id = self.focus.clone().unwrap_or_default();
                self.members_of(&id, sort)
                    .into_iter()
                    .map(|f| RowId::Finding(f.id.clone()))
                    .collect()
            }
            Pane::View(View::Findings) => {
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
            Pane::View(View::Connections) => {
                let mut v: Vec<&ConnRecord> = self
                    .conns
                    .values()
                    .filter(|c| conn_matches(c, &filter))
                    .collect();
                v.sort_by(|a, b| cmp_conns(a, b, sort));
                v.into_iter().map(|c| RowId::Conn(c.key)).collect()
            }
            Pane::View(View::Listeners) => self.listener_rows(&filter, sort),
            Pane::View(View::Owners) => {
                let v = self.owner_rows(&filter, sort);
                let ids = v.iter().map(|r| RowId::Owner(r.name.clone())).collect();
                owners = v;
                ids
            }
            Pane::View(View::Exposure) => {
                let v = self.exposure_rows(&filter, sort);
                let ids = v
                    .iter()
                    .map(|g| RowId::Exposure(super::exposure_key(g)))
                    .collect();
                exposure = v;
                ids
            }
        };
        self.rows = Rows {
            ids,
            owners,
            exposure,
        };
        self.rows_pane = Some(pane);
        self.dirty = false;
        // Keep the selection on the same row when it is still there.
        let n = self.rows.ids.len();
        let found = self
            .cursor()
            .selected_id
            .as_ref()
            .and_then(|id| self.rows.ids.iter().position(|r| r == id));
        let c = &mut self.cursors[pane.index()];
        c.selected = found.unwrap_or(c.selected).min(n.saturating_sub(1));
        c.selected_id = self.rows.ids.get(c.selected).cloned();
        c.offset = c.offset.min(c.selected);
    }

    /// The Listeners view (and the unaccepted `CLOSE_WAIT` count per listening port).
    fn listener_rows(&mut self, filter: &str, sort: SortKey) -> Vec<RowId> {
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
            .filter(|c| c.state == TcpState::Listen && conn_matches(c, filter))
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
            let name = format_owner(c.owner.as_deref());
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
        // TIME_WAIT sockets are counted by the daemon, not listed: no process holds them.
        if let Some(n) = self.time_wait.filter(|&n| n > 0) {
            let name = format_owner(None);
            let r = by.entry(name.clone()).or_insert_with(|| OwnerRow {
                name,
                ..OwnerRow::default()
            });
            r.sockets += n;
            r.time_wait += n;
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

    pub(super) fn move_to(&mut self, target: usize) {
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
}
