//! Rendering of [`App`] with ratatui. Only the visible rows are turned into widgets, so the
//! cost of a frame does not grow with the number of connections (beyond the re-sort the state
//! does at most once per frame when something changed).
use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize as _};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Sparkline, Table, Wrap};
use tcpwatch_core::model::{ConnRecord, Finding, MonoNs, Severity};
use tcpwatch_core::render::{format_owner, ss_columns};

use self::incidents::{INCIDENTS_NOT_SERVED, draw_focus_summary, incident_cells, incident_columns};
use crate::state::{
    App, Pane, RowId, View, accept_fill, finding_age, subject_local, subject_owner,
};

/// Smallest area the full UI is drawn in; below it a one-line notice is shown.
const MIN_WIDTH: u16 = 30;
const MIN_HEIGHT: u16 = 6;

/// Draws one frame.
pub fn draw(frame: &mut Frame<'_>, app: &mut App, now: MonoNs) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let p = Paragraph::new("tcpwatch top: terminal too small").wrap(Wrap { trim: true });
        frame.render_widget(p, area);
        return;
    }
    let [header, tabs, main, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(header_line(app)), header);
    frame.render_widget(Paragraph::new(tabs_line(app)), tabs);
    let main = draw_focus_summary(frame, app, now, main);
    let (table_area, detail_area) = if app.detail_open() && main.height >= 8 {
        let [t, d] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(main);
        (t, Some(d))
    } else {
        (main, None)
    };
    draw_table(frame, app, now, table_area);
    if let Some(d) = detail_area {
        draw_detail(frame, app, now, d);
    }
    frame.render_widget(Paragraph::new(footer_line(app)), footer);
    if app.help_open() {
        draw_help(frame, area);
    }
}

fn header_line(app: &App) -> Line<'static> {
    let (crit, warn, info) = app.severity_counts();
    let mut spans = vec![
        Span::from("tcpwatch top ").bold(),
        Span::from(app.source.clone()),
    ];
    if !app.status.is_empty() {
        spans.push(Span::from(format!(" ({})", app.status)));
    }
    spans.push(Span::from(format!("  conns {}", app.connection_count())));
    if let Some(n) = app.time_wait() {
        spans.push(Span::from(format!(" + {n} TIME-WAIT")));
    }
    if app.incidents_served() {
        let (ic, iw, ii) = app.incident_counts();
        spans.push(Span::from("  incidents: "));
        spans.push(Span::from(format!("{ic} crit")).style(sev_style(Severity::Critical)));
        spans.push(Span::from(format!(" {iw} warn")).style(sev_style(Severity::Warning)));
        // Info incidents are rare: said only when there are some (the header is full).
        if ii > 0 {
            spans.push(Span::from(format!(" {ii} info")));
        }
    } else {
        spans.push(Span::from(format!("  {INCIDENTS_NOT_SERVED}")).dim());
    }
    spans.push(Span::from("  findings: "));
    spans.push(Span::from(format!("{crit} crit")).style(sev_style(Severity::Critical)));
    spans.push(Span::from(format!(" {warn} warn")).style(sev_style(Severity::Warning)));
    spans.push(Span::from(format!(" {info} info")));
    let bad = app.bad_events();
    if bad.count > 0 {
        spans.push(
            Span::from(format!(
                "  {} unreadable events (last: {})",
                bad.count, bad.last_error
            ))
            .yellow(),
        );
    }
    if app.paused() {
        spans.push(
            Span::from(format!("  PAUSED ({} pending)", app.pending_count()))
                .add_modifier(Modifier::REVERSED),
        );
    }
    Line::from(spans)
}

fn tabs_line(app: &App) -> Line<'static> {
    let mut spans = Vec::new();
    for v in View::ALL {
        let s = Span::from(format!(" {} ", v.title()));
        spans.push(if v == app.view() {
            s.add_modifier(Modifier::REVERSED)
        } else {
            s
        });
        spans.push(Span::from("|"));
    }
    if let Some(id) = app.focus() {
        spans.push(Span::from(format!(" members of {id} |")).bold());
    }
    spans.push(Span::from(format!(" sort: {}", app.sort_key().name())));
    if !app.filter().is_empty() || app.editing_filter() {
        spans.push(Span::from(format!("  filter: /{}", app.filter())).bold());
    }
    Line::from(spans)
}

fn footer_line(app: &App) -> Line<'static> {
    if app.editing_filter() {
        return Line::from(format!(
            "/{}_   (Enter: keep, Esc: clear; matches port, address, process, state)",
            app.filter()
        ));
    }
    Line::from(
        "q quit  Tab view  s sort  / filter  Enter members/detail  Esc back  p pause  ? help  arrows/j/k/PgUp/PgDn/Home/End"
            .to_owned(),
    )
    .dim()
}

pub(crate) fn sev_style(s: Severity) -> Style {
    match s {
        Severity::Critical => Style::new().red().bold(),
        Severity::Warning => Style::new().yellow(),
        Severity::Info => Style::new(),
    }
}

pub(crate) fn sev_short(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "CRIT",
        Severity::Warning => "WARN",
        Severity::Info => "INFO",
    }
}

/// `[#####-----] 3/2`: a listener's accept queue against its limit.
#[must_use]
pub fn accept_bar(c: &ConnRecord, width: usize) -> String {
    let fill = accept_fill(c).clamp(0.0, 1.0);
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "fill is clamped to 0..=1 and width is a small terminal width"
    )]
    let n = ((fill * width as f64).round() as usize).min(width);
    format!(
        "[{}{}] {}/{}",
        "#".repeat(n),
        "-".repeat(width - n),
        c.queues.accept_queue,
        c.queues.accept_limit
    )
}

fn draw_table(frame: &mut Frame<'_>, app: &mut App, now: MonoNs, area: Rect) {
    let page = usize::from(area.height.saturating_sub(1)).max(1);
    app.set_page(page);
    let offset = app.offset();
    let selected = app.selected();
    let total = app.row_count();
    let ids: Vec<RowId> = app.visible_ids(offset, page).to_vec();
    let (header, widths) = columns(app.pane(), area.width >= 110);
    let mut rows = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let cells = row_cells(app, id, offset + i, now, area.width >= 110);
        let mut row = Row::new(cells.0);
        if let Some(st) = cells.1 {
            row = row.style(st);
        }
        if offset + i == selected {
            row = row.add_modifier(Modifier::REVERSED);
        }
        rows.push(row);
    }
    let empty = rows.is_empty();
    let table = Table::new(rows, widths)
        .header(Row::new(header).add_modifier(Modifier::BOLD | Modifier::UNDERLINED))
        .column_spacing(1);
    frame.render_widget(table, area);
    if empty && area.height >= 2 {
        let msg = match app.pane() {
            Pane::View(View::Incidents) if !app.incidents_served() => INCIDENTS_NOT_SERVED,
            Pane::Members => "no open members: the incident resolved (Esc: back)",
            _ if !app.filter().is_empty() => "nothing matches the filter",
            Pane::View(View::Incidents) => "no open incidents",
            Pane::View(View::Findings) => "no open findings",
            Pane::View(View::Connections | View::Listeners | View::Owners) => "no connections",
            Pane::View(View::Exposure) => ui_exposure::EXPOSURE_EMPTY,
        };
        let r = Rect {
            y: area.y + 1,
            height: 1,
            ..area
        };
        frame.render_widget(Paragraph::new(msg).dim(), r);
    } else if total > page && area.width > 12 {
        // Position indicator in the header row's right corner.
        let s = format!(" {}/{} ", selected + 1, total);
        let w = u16::try_from(s.len()).unwrap_or(u16::MAX).min(area.width);
        let r = Rect {
            x: area.x + area.width - w,
            y: area.y,
            width: w,
            height: 1,
        };
        frame.render_widget(Paragraph::new(s).dim(), r);
    }
}

/// Column titles and widths of a pane; `wide` below 110 columns drops or narrows some.
fn columns(pane: Pane, wide: bool) -> (Vec<&'static str>, Vec<Constraint>) {
    use Constraint::{Fill, Length};
    let view = match pane {
        Pane::View(v) => v,
        Pane::Members => View::Findings,
    };
    match (view, wide) {
        (View::Incidents, _) => incident_columns(wide),
        (View::Exposure, _) => ui_exposure::columns(wide),
        (View::Findings, true) => (
            vec!["Sev", "Kind", "Age", "Local", "Owner", "Diagnosis"],
            vec![
                Length(4),
                Length(22),
                Length(7),
                Length(21),
                Length(14),
                Fill(1),
            ],
        ),
        (View::Findings, false) => (
            vec!["Sev", "Kind", "Age", "Local", "Diagnosis"],
            vec![Length(4), Length(22), Length(6), Length(21), Fill(1)],
        ),
        (View::Connections, true) => (
            vec![
                "State", "Recv-Q", "Send-Q", "Local", "Peer", "Age", "Retr", "Boff", "RTT", "Owner",
            ],
            vec![
                Length(10),
                Length(10),
                Length(10),
                Fill(1),
                Fill(1),
                Length(7),
                Length(7),
                Length(4),
                Length(8),
                Length(16),
            ],
        ),
        (View::Connections, false) => (
            vec![
                "State", "Recv-Q", "Send-Q", "Local", "Peer", "Age", "Retr", "Owner",
            ],
            vec![
                Length(10),
                Length(7),
                Length(7),
                Fill(3),
                Fill(3),
                Length(6),
                Length(5),
                Fill(2),
            ],
        ),
        (View::Listeners, _) => (
            vec!["Local", "Netns", "Accept queue", "Unaccepted CW", "Owner"],
            vec![Length(22), Length(10), Length(24), Length(13), Fill(1)],
        ),
        (View::Owners, _) => (
            vec![
                "Owner",
                "Sockets",
                "ESTAB",
                "LISTEN",
                "CLOSE-WAIT",
                "Stuck",
                "TIME-WAIT",
                "Other",
                "Send-Q total",
            ],
            vec![
                Fill(1),
                Length(7),
                Length(6),
                Length(6),
                Length(10),
                Length(5),
                Length(9),
                Length(5),
                Length(12),
            ],
        ),
    }
}

pub(crate) type Cells = (Vec<String>, Option<Style>);

fn row_cells(app: &App, id: &RowId, index: usize, now: MonoNs, wide: bool) -> Cells {
    match id {
        RowId::Incident(iid) => app
            .incident(iid)
            .map_or((Vec::new(), None), |i| incident_cells(i, now, wide)),
        RowId::Finding(fid) => app
            .finding(fid)
            .map_or((Vec::new(), None), |f| finding_cells(f, now, wide)),
        RowId::Conn(key) => {
            let Some(c) = app.connection(key) else {
                return (Vec::new(), None);
            };
            if app.view() == View::Listeners {
                (
                    vec![
                        c.local.to_string(),
                        c.netns.inode.to_string(),
                        accept_bar(c, 10),
                        app.unaccepted_for(c).to_string(),
                        format_owner(c.owner.as_deref()),
                    ],
                    (accept_fill(c) >= 1.0).then(|| Style::new().red()),
                )
            } else {
                let mut cells = conn_cells(c, now);
                if !wide {
                    cells.drain(7..9);
                }
                (cells, None)
            }
        }
        RowId::Exposure(_) => app
            .exposure_row(index)
            .map_or((Vec::new(), None), |g| ui_exposure::cells(g, wide)),
        RowId::Owner(_) => app.owner_row(index).map_or((Vec::new(), None), |r| {
            (
                vec![
                    r.name.clone(),
                    r.sockets.to_string(),
                    r.established.to_string(),
                    r.listen.to_string(),
                    r.close_wait.to_string(),
                    r.stuck_close_wait.to_string(),
                    r.time_wait.to_string(),
                    r.other.to_string(),
                    r.send_q_total.to_string(),
                ],
                (r.stuck_close_wait > 0).then(|| Style::new().red()),
            )
        }),
    }
}

/// The peer is left to the detail pane; narrow terminals drop the owner too.
fn finding_cells(f: &Finding, now: MonoNs, wide: bool) -> Cells {
    let mut cells = vec![
        sev_short(f.severity).to_owned(),
        f.kind.name().to_owned(),
        finding_age(f, now),
        subject_local(&f.subject),
    ];
    if wide {
        cells.push(format_owner(subject_owner(&f.subject)));
    }
    cells.push(f.diagnosis.clone());
    (cells, Some(sev_style(f.severity)))
}

fn conn_cells(c: &ConnRecord, now: MonoNs) -> Vec<String> {
    let mut cells = ss_columns(c, now).to_vec();
    cells.extend([
        if c.full_sock {
            format!("{:.1}ms", f64::from(c.tcp.srtt_us) / 1000.0)
        } else {
            "-".into()
        },
        format_owner(c.owner.as_deref()),
    ]);
    cells
}

fn draw_detail(frame: &mut Frame<'_>, app: &mut App, now: MonoNs, area: Rect) {
    let Some(d) = app.detail(now) else {
        let b = Block::default().borders(Borders::ALL).title(" detail ");
        frame.render_widget(Paragraph::new("nothing selected").block(b), area);
        return;
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {} ", d.title));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let sparks = !d.send_q.is_empty() && inner.height >= 7;
    let [text, s1, s2] = if sparks {
        Layout::vertical([
            Constraint::Min(1),
            Constraint::Length(2),
            Constraint::Length(2),
        ])
        .areas(inner)
    } else {
        [inner, Rect::default(), Rect::default()]
    };
    let lines: Vec<Line<'_>> = d.lines.iter().map(|l| Line::from(l.as_str())).collect();
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), text);
    if sparks {
        for (area, data, name) in [(s1, &d.send_q, "Send-Q"), (s2, &d.retrans, "retransmits")] {
            let max = data.iter().copied().max().unwrap_or(0);
            let last = data.last().copied().unwrap_or(0);
            let title = format!("{name} history: last {last}, max {max}");
            let sp = Sparkline::default()
                .block(Block::default().title(title))
                .data(data)
                .max(max.max(1));
            frame.render_widget(sp, area);
        }
    }
}

const HELP: &[&str] = &[
    "tcpwatch top keys",
    "",
    "Tab / Shift-Tab   next / previous view (Incidents, Findings, Connections, Listeners,",
    "                  Owners, Exposure: how long connections would wait for a dead peer)",
    "Up/Down, j/k      move the selection",
    "PgUp/PgDn         move by one page",
    "Home/End, g/G     first / last row",
    "s                 cycle the sort order of the view",
    "/                 filter: substring of port, address, process or state",
    "Enter             on an incident: list its member findings (with the incident's",
    "                  diagnosis above); elsewhere toggle the detail pane of the row",
    "                  (a member's detail shows its connection)",
    "Esc               close the detail pane, back from the members, or clear the filter",
    "p                 pause / resume applying updates",
    "?                 this help (any key closes it)",
    "q, Ctrl-C         quit",
];

fn draw_help(frame: &mut Frame<'_>, area: Rect) {
    let w = area.width.min(84);
    let h = area
        .height
        .min(u16::try_from(HELP.len()).unwrap_or(u16::MAX) + 2);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    frame.render_widget(Clear, r);
    let lines: Vec<Line<'_>> = HELP.iter().map(|l| Line::from(*l)).collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" help ")),
        r,
    );
}

/// The text of a rendered buffer, one string per row, trailing spaces removed.
#[must_use]
pub fn buffer_lines(buf: &Buffer) -> Vec<String> {
    let area = buf.area;
    let mut out = Vec::with_capacity(usize::from(area.height));
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            if let Some(cell) = buf.cell((x, y)) {
                line.push_str(cell.symbol());
            }
        }
        out.push(line.trim_end().to_owned());
    }
    out
}

#[path = "ui_incidents.rs"]
mod incidents;

#[path = "ui_exposure.rs"]
mod ui_exposure;

#[cfg(test)]
#[path = "ui_tests.rs"]
mod tests;
