//! The Exposure view's columns and rows (`docs/exposure.md`).
use ratatui::layout::Constraint;
use ratatui::style::{Style, Stylize as _};
use tcpwatch_core::exposure::{ExposureGroup, wait_text};

use super::Cells;

/// Shown when the table is empty.
pub const EXPOSURE_EMPTY: &str =
    "no audit yet (or not served by this daemon): no ESTABLISHED connection to audit";

/// Column titles and widths; narrow terminals drop the diagnosis.
pub(super) fn columns(wide: bool) -> (Vec<&'static str>, Vec<Constraint>) {
    use Constraint::{Fill, Length};
    if wide {
        (
            vec![
                "Worst",
                "Exposed",
                "Never",
                "Flight",
                "Process",
                "Remote",
                "Diagnosis",
            ],
            vec![
                Length(8),
                Length(9),
                Length(5),
                Length(6),
                Length(18),
                Length(22),
                Fill(1),
            ],
        )
    } else {
        (
            vec!["Worst", "Exposed", "Never", "Process", "Remote"],
            vec![Length(8), Length(9), Length(5), Fill(1), Fill(1)],
        )
    }
}

/// One row: red when it has a connection that would never notice.
pub(super) fn cells(g: &ExposureGroup, wide: bool) -> Cells {
    let mut v = vec![
        wait_text(g.worst_case_ms),
        format!("{}/{}", g.exposed, g.connections),
        g.never.to_string(),
    ];
    if wide {
        v.push(g.in_flight.to_string());
    }
    v.push(g.process.clone());
    v.push(g.remote.to_string());
    if wide {
        v.push(g.diagnosis.clone());
    }
    let style = if g.never > 0 {
        Some(Style::new().red())
    } else if g.exposed > 0 {
        Some(Style::new().yellow())
    } else {
        None
    };
    (v, style)
}
