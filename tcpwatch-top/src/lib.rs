//! `tcpwatch top`: an interactive terminal view of a tcpwatch daemon.
//!
//! - [`state`]: the pure UI state (views, sort, filter, selection, keys), tested without a
//!   terminal;
//! - [`ui`]: rendering with ratatui;
//! - [`client`]: the daemon's API and Server-Sent Events stream, over ureq.
pub mod client;
pub mod state;
pub mod ui;

use std::io::{IsTerminal as _, Write as _};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use crossterm::event::{self, Event, KeyEventKind};
use crossterm::{execute, terminal};
use ratatui::Terminal;
use ratatui::backend::{CrosstermBackend, TestBackend};
use tcpwatch_core::model::MonoNs;

use crate::client::ClientMsg;
use crate::state::{Action, App};

/// Options of `tcpwatch top`.
#[derive(Clone, Debug)]
pub struct TopOptions {
    /// The daemon's API address (`daemon.listen`).
    pub addr: String,
    /// Print one frame (or with `json`, the data) and exit.
    pub once: bool,
    pub json: bool,
    /// Run the data plane in-process instead of asking a daemon (not supported yet).
    pub standalone: bool,
}

/// How often the screen is redrawn when nothing happens.
const TICK: Duration = Duration::from_millis(250);
/// Most stream messages applied between two frames (the rest wait for the next turn).
const MAX_MSGS_PER_TURN: usize = 200_000;

/// Runs `tcpwatch top`.
pub fn run(opts: TopOptions) -> anyhow::Result<()> {
    let TopOptions {
        addr,
        once,
        json,
        standalone,
    } = opts;
    if standalone {
        bail!(
            "not yet supported: run the daemon (`tcpwatch daemon`, or `cargo xtask run`) and \
             use `tcpwatch top --addr ADDR`"
        );
    }
    let snap = client::load(&addr)?;
    let mut app = App::new(addr.clone());
    app.apply_snapshot(snap);
    if once {
        return print_once(&mut app, json);
    }
    app.status = "live".into();
    let (tx, rx) = mpsc::channel();
    let (poll_addr, poll_tx) = (addr.clone(), tx.clone());
    std::thread::Builder::new()
        .name("top-client".into())
        .spawn(move || client::follow(&addr, &tx))
        .context("starting the client thread")?;
    std::thread::Builder::new()
        .name("top-exposure".into())
        .spawn(move || client::poll_exposure(&poll_addr, &poll_tx))
        .context("starting the exposure poller")?;
    interactive(&mut app, &rx)
}

fn print_once(app: &mut App, json: bool) -> anyhow::Result<()> {
    match write_once(app, json) {
        // `tcpwatch top --once | head`: the reader went away, nothing left to say.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

fn write_once(app: &mut App, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let v = serde_json::json!({
            "connections": app.all_connections(),
            "findings": app.all_findings(),
            "incidents": app.all_incidents(),
            "exposure": app.exposure(),
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    let (w, h) = if std::io::stdout().is_terminal() {
        terminal::size().unwrap_or((120, 40))
    } else {
        (120, 40)
    };
    for line in render_text(app, w, h, mono_now()) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// One frame of `app` as plain text lines, `w` x `h` cells.
pub fn render_text(app: &mut App, w: u16, h: u16, now: MonoNs) -> Vec<String> {
    let Ok(mut term) = Terminal::new(TestBackend::new(w, h)) else {
        return Vec::new();
    };
    if term.draw(|f| ui::draw(f, app, now)).is_err() {
        return Vec::new();
    }
    ui::buffer_lines(term.backend().buffer())
}

/// Restores the terminal when dropped (normal exit and errors; the panic hook covers panics).
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> anyhow::Result<Self> {
        terminal::enable_raw_mode().context("entering raw mode (is stdin a terminal?)")?;
        let guard = Self;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            crossterm::cursor::Hide
        )?;
        Ok(guard)
    }
}

fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        crossterm::cursor::Show
    );
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn interactive(app: &mut App, rx: &mpsc::Receiver<ClientMsg>) -> anyhow::Result<()> {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        prev(info);
    }));
    let _guard = TerminalGuard::enter()?;
    let mut term = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    term.clear()?;
    let mut last_draw: Option<Instant> = None;
    let mut changed = true;
    loop {
        for msg in rx.try_iter().take(MAX_MSGS_PER_TURN) {
            changed = true;
            match msg {
                ClientMsg::Snapshot(s) => app.apply_snapshot(s),
                ClientMsg::Event(e) => app.apply_stream_event(e),
                ClientMsg::BadEvent(e) => app.note_bad_event(e),
                ClientMsg::Status(s) => app.status = s,
                ClientMsg::Exposure(e) => app.apply_exposure(*e),
                ClientMsg::TimeWait(n) => app.apply_time_wait(n),
            }
        }
        if changed || last_draw.is_none_or(|t| t.elapsed() >= TICK) {
            let now = mono_now();
            term.draw(|f| ui::draw(f, app, now))?;
            last_draw = Some(Instant::now());
            changed = false;
        }
        let wait = TICK.saturating_sub(last_draw.map_or(TICK, |t| t.elapsed()));
        if event::poll(wait.max(Duration::from_millis(10)))? {
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    if app.handle_key(k) == Action::Quit {
                        break;
                    }
                    changed = true;
                }
                Event::Resize(..) => changed = true,
                _ => {}
            }
        }
    }
    drop(term);
    Ok(())
}

pub use tcpwatch_core::model::mono_now;
