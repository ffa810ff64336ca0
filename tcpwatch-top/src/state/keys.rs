//! Key bindings. Pure: no I/O.
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{Action, App, Pane, RowId, View};

impl App {
    /// Handles one key.
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
            self.filter_key(key.code);
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
                let n = self.pane().sorts().len();
                let c = self.cursor_mut();
                c.sort = (c.sort + 1) % n;
                self.dirty = true;
            }
            KeyCode::Tab => self.switch_view(1),
            KeyCode::BackTab => self.switch_view(View::ALL.len() - 1),
            KeyCode::Enter => self.enter(),
            KeyCode::Esc => {
                if self.detail {
                    self.detail = false;
                } else if self.focus.is_some() {
                    self.leave_incident();
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

    fn filter_key(&mut self, code: KeyCode) {
        match code {
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
    }

    /// Enter: on an incident, list its members; elsewhere toggle the detail pane.
    fn enter(&mut self) {
        if self.pane() == Pane::View(View::Incidents) {
            if let Some(RowId::Incident(id)) = self.selected_id() {
                self.enter_incident(id);
            }
            return;
        }
        self.detail = !self.detail;
    }

    fn switch_view(&mut self, step: usize) {
        let i = (self.view.index() + step) % View::ALL.len();
        self.set_view(View::ALL[i]);
    }

    /// Sets the `/` filter (applies to every view but an incident's member list).
    pub fn set_filter(&mut self, f: String) {
        if f != self.filter {
            self.filter = f;
            self.dirty = true;
        }
    }
}
