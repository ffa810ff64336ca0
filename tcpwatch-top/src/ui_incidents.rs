//! The Incidents view's parts: its columns and rows, and the incident's story drawn above its
//! member list.
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use tcpwatch_core::incident::Incident;
use tcpwatch_core::model::MonoNs;

use super::{Cells, sev_short, sev_style};
use crate::state::{App, Detail, incident_age, incident_port, incident_process, incident_remote};

/// Shown instead of incidents when the daemon answers 404 to `/api/v1/incidents`.
pub const INCIDENTS_NOT_SERVED: &str = "incidents: not served by this daemon";

/// Above an incident's member list: its story (diagnosis, consequence, root, counts).
/// Returns the area left for the table (all of `main` while a member's detail is open).
pub(super) fn draw_focus_summary(
    frame: &mut Frame<'_>,
    app: &App,
    now: MonoNs,
    main: Rect,
) -> Rect {
    // With a member's detail open, the room goes to the detail (the tabs line still names
    // the incident).
    let Some(id) = app.focus().filter(|_| !app.detail_open()) else {
        return main;
    };
    let d = app.incident_detail(id, now).unwrap_or_else(|| Detail {
        title: format!("incident {id}"),
        lines: vec!["resolved: no longer open (Esc: back to the incidents)".to_owned()],
        ..Detail::default()
    });
    // Rows once wrapped (word wrapping may take a little more: one spare row).
    let inner = usize::from(main.width.saturating_sub(2)).max(1);
    let rows: usize = d
        .lines
        .iter()
        .map(|l| l.chars().count().div_ceil(inner).max(1))
        .sum();
    let want = u16::try_from(rows).unwrap_or(u16::MAX).saturating_add(3);
    let h = want.min(main.height / 2);
    if h < 3 {
        return main;
    }
    let [top, rest] = Layout::vertical([Constraint::Length(h), Constraint::Min(1)]).areas(main);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {} (Esc: back) ", d.title));
    let lines: Vec<Line<'_>> = d.lines.iter().map(|l| Line::from(l.as_str())).collect();
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(block),
        top,
    );
    rest
}

/// The Incidents view's columns; narrow terminals drop the remote endpoint.
pub(super) fn incident_columns(wide: bool) -> (Vec<&'static str>, Vec<Constraint>) {
    use Constraint::{Fill, Length};
    if wide {
        return (
            vec![
                "Sev",
                "Kind",
                "Process",
                "Port",
                "Remote",
                "Members",
                "Age",
                "Diagnosis",
            ],
            vec![
                Length(4),
                Length(23),
                Length(16),
                Length(6),
                Length(21),
                Length(7),
                Length(7),
                Fill(1),
            ],
        );
    }
    (
        vec!["Sev", "Kind", "Process", "Port", "Mem", "Age", "Diagnosis"],
        vec![
            Length(4),
            Length(23),
            Length(14),
            Length(6),
            Length(4),
            Length(6),
            Fill(1),
        ],
    )
}

/// Narrow terminals drop the remote endpoint (it stays in the summary after Enter).
pub(super) fn incident_cells(i: &Incident, now: MonoNs, wide: bool) -> Cells {
    let mut cells = vec![
        sev_short(i.severity).to_owned(),
        i.kind.name().to_owned(),
        incident_process(i),
        incident_port(i),
    ];
    if wide {
        cells.push(incident_remote(i));
    }
    cells.extend([
        i.members_total.to_string(),
        incident_age(i, now),
        i.diagnosis.clone(),
    ]);
    (cells, Some(sev_style(i.severity)))
}
