//! The TUI's state machine: keys, data and ticks in, effects (queries, exports, copies) out.
//! No terminal and no I/O here, so every transition is unit-tested.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use uuid::Uuid;

use crate::audit::filter::{parse_time_us, Filter};
use crate::audit::Cursor;
use crate::protocol::View;

use super::columns::{columns, Col};
use super::source::{ExportRequest, Fetch, FetchKind, Record, Response, SourceKind};

/// Rows per query: a few screens of a large terminal.
pub const PAGE: usize = 200;
/// Fetch the next page once the selection is this many screens from the last loaded row.
const LOOKAHEAD_SCREENS: usize = 2;
/// Ticks between live refreshes (the runner ticks every 250 ms: new rows show within 0.5 s).
pub const REFRESH_TICKS: u64 = 2;

/// Every key binding, for the help screen and the README.
pub const KEYS: &[(&str, &str)] = &[
    ("↑ ↓  k j", "move the selection"),
    ("PgUp PgDn  ^B ^F", "move a page"),
    (
        "Home End  g G",
        "first / last loaded row (more load as you go)",
    ),
    ("Enter", "command: its API calls; call: every field"),
    ("Esc  Backspace", "back"),
    ("Tab  v", "switch between commands and API calls"),
    ("/", "filter: user:alice ns:prod verb:delete status:4xx"),
    ("", "  since:1h cluster: resource: method: min: some text"),
    ("c", "clear the filter"),
    ("s  S", "sort loaded rows by the next column / reverse"),
    ("t", "jump to a time (RFC 3339 or 2h, 7d ago; empty: live)"),
    ("y", "copy the selected row as JSON"),
    ("e", "export the filtered view to a CSV file"),
    ("r", "switch the source: local store / gateway"),
    ("?", "show or hide this help"),
    ("q  Ctrl-C", "quit"),
];

/// What the app asks its runner to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Fetch(Fetch),
    Export(ExportRequest),
    Copy(String),
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Error,
}

/// A line of text being edited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Input {
    pub text: String,
    /// Cursor position in characters.
    pub cursor: usize,
}

impl Input {
    pub fn new(text: &str) -> Input {
        Input {
            text: text.to_string(),
            cursor: text.chars().count(),
        }
    }

    fn byte(&self, chars: usize) -> usize {
        self.text
            .char_indices()
            .nth(chars)
            .map_or(self.text.len(), |(i, _)| i)
    }

    /// Applies an editing key; false when the key is not an editing key.
    fn edit(&mut self, key: &KeyEvent) -> bool {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('u') if ctrl => {
                let at = self.byte(self.cursor);
                self.text.replace_range(..at, "");
                self.cursor = 0;
            }
            KeyCode::Char('w') if ctrl => {
                let before: Vec<char> = self.text.chars().take(self.cursor).collect();
                let mut start = before.len();
                while start > 0 && before[start - 1] == ' ' {
                    start -= 1;
                }
                while start > 0 && before[start - 1] != ' ' {
                    start -= 1;
                }
                let (a, b) = (self.byte(start), self.byte(self.cursor));
                self.text.replace_range(a..b, "");
                self.cursor = start;
            }
            KeyCode::Char('a') if ctrl => self.cursor = 0,
            KeyCode::Char('e') if ctrl => self.cursor = self.text.chars().count(),
            KeyCode::Char(c) if !ctrl => {
                let at = self.byte(self.cursor);
                self.text.insert(at, c);
                self.cursor += 1;
            }
            KeyCode::Backspace if self.cursor > 0 => {
                let (a, b) = (self.byte(self.cursor - 1), self.byte(self.cursor));
                self.text.replace_range(a..b, "");
                self.cursor -= 1;
            }
            KeyCode::Delete if self.cursor < self.text.chars().count() => {
                let (a, b) = (self.byte(self.cursor), self.byte(self.cursor + 1));
                self.text.replace_range(a..b, "");
            }
            KeyCode::Left => self.cursor = self.cursor.saturating_sub(1),
            KeyCode::Right => self.cursor = (self.cursor + 1).min(self.text.chars().count()),
            KeyCode::Home => self.cursor = 0,
            KeyCode::End => self.cursor = self.text.chars().count(),
            KeyCode::Backspace | KeyCode::Delete => {}
            _ => return false,
        }
        true
    }
}

/// What the keyboard is doing: moving around, or typing into one of the prompts.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    Normal,
    Filter { input: Input, error: Option<String> },
    Jump { input: Input, error: Option<String> },
    Export { input: Input, error: Option<String> },
    Help,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    /// Index into the view's columns.
    pub column: usize,
    pub ascending: bool,
}

/// A listing of commands or calls, loaded a page at a time.
#[derive(Debug, Clone)]
pub struct ListScreen {
    /// Tells this screen's answers from those of a screen it replaced.
    pub gen: u64,
    pub view: View,
    /// The filter as typed (the compact language).
    pub query: String,
    pub filter: Filter,
    /// Drill-down: the command whose calls these are, and its command line.
    pub within: Option<(Uuid, String)>,
    /// Loaded rows in the listing's order (newest first).
    pub rows: Vec<Record>,
    /// When sorted: display position → index into `rows`.
    pub order: Option<Vec<usize>>,
    pub sort: Option<Sort>,
    /// Display position of the selection, and of the first row on screen.
    pub selected: usize,
    pub offset: usize,
    pub next: Option<Cursor>,
    pub exhausted: bool,
    pub loading: bool,
    pub refreshing: bool,
    pub loaded: bool,
    pub marker: Option<i64>,
    /// Jumped to a time: only rows at or before it (µs), and no live refresh.
    pub anchor: Option<i64>,
    /// Why the last page could not be read (shown where the rows would be).
    pub failed: Option<String>,
}

impl ListScreen {
    fn new(gen: u64, view: View, query: String, filter: Filter) -> ListScreen {
        ListScreen {
            gen,
            view,
            query,
            filter,
            within: None,
            rows: Vec::new(),
            order: None,
            sort: None,
            selected: 0,
            offset: 0,
            next: None,
            exhausted: false,
            loading: false,
            refreshing: false,
            loaded: false,
            marker: None,
            anchor: None,
            failed: None,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The row at a display position.
    pub fn row(&self, display: usize) -> Option<&Record> {
        let index = match &self.order {
            Some(order) => *order.get(display)?,
            None => display,
        };
        self.rows.get(index)
    }

    pub fn selected_row(&self) -> Option<&Record> {
        self.row(self.selected)
    }

    fn position_of(&self, id: Uuid) -> Option<usize> {
        match &self.order {
            Some(order) => order.iter().position(|&i| self.rows[i].id() == id),
            None => self.rows.iter().position(|r| r.id() == id),
        }
    }

    /// The filter the queries use: the typed one, bounded by a jump in time.
    pub fn effective_filter(&self) -> Filter {
        let mut filter = self.filter.clone();
        if let Some(anchor) = self.anchor {
            let bound = anchor.saturating_add(1);
            filter.until_us = Some(filter.until_us.map_or(bound, |u| u.min(bound)));
        }
        filter
    }

    fn resort(&mut self) {
        self.order = self.sort.map(|sort| {
            let col = columns(self.view)[sort.column];
            // Each row's value once, not once per comparison (text columns allocate).
            let keys: Vec<_> = self.rows.iter().map(|r| col.sort_key(r)).collect();
            let mut order: Vec<usize> = (0..self.rows.len()).collect();
            // Rows are newest first, so a stable sort breaks ties newest first.
            order.sort_by(|&a, &b| {
                let o = keys[a].cmp(&keys[b]);
                if sort.ascending {
                    o
                } else {
                    o.reverse()
                }
            });
            order
        });
    }

    /// Keeps the selection (and the first row on screen) on the same records across a change
    /// of the rows: `f` changes them.
    fn keeping_place(&mut self, viewport: usize, f: impl FnOnce(&mut ListScreen)) {
        let selected = self.selected_row().map(Record::id);
        let top = self.row(self.offset).map(Record::id);
        let at_top = self.offset == 0;
        f(self);
        self.resort();
        if let Some(pos) = selected.and_then(|id| self.position_of(id)) {
            self.selected = pos;
        }
        if !at_top {
            if let Some(pos) = top.and_then(|id| self.position_of(id)) {
                self.offset = pos;
            }
        }
        self.clamp(viewport);
    }

    fn clamp(&mut self, viewport: usize) {
        let viewport = viewport.max(1);
        if self.rows.is_empty() {
            self.selected = 0;
            self.offset = 0;
            return;
        }
        self.selected = self.selected.min(self.rows.len() - 1);
        self.offset = self.offset.min(self.rows.len() - 1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + viewport {
            self.offset = self.selected + 1 - viewport;
        }
    }
}

#[derive(Debug, Clone)]
pub enum Screen {
    List(Box<ListScreen>),
    /// Every field of one record.
    Detail {
        record: Record,
        scroll: u16,
    },
}

pub struct App {
    pub source: SourceKind,
    pub source_label: String,
    pub stack: Vec<Screen>,
    pub mode: Mode,
    pub status: Option<(String, Level)>,
    pub color: bool,
    /// Table rows that fit on screen (set from the terminal size).
    pub viewport: usize,
    pub width: u16,
    pub quit: bool,
    ticks: u64,
    next_gen: u64,
    effects: Vec<Effect>,
    /// The clock for default export names (µs), injected so tests are deterministic.
    pub now_us: fn() -> i64,
}

impl App {
    /// A new app showing `view` of `source`, filtered by `query` (an invalid query is an error
    /// for the caller: the command line is checked before the screen opens).
    pub fn new(
        source: SourceKind,
        view: View,
        query: &str,
    ) -> Result<App, crate::audit::filter::FilterError> {
        let filter = Filter::parse_query(query)?;
        let mut app = App {
            source,
            source_label: source.name().to_string(),
            stack: Vec::new(),
            mode: Mode::Normal,
            status: None,
            color: true,
            viewport: 20,
            width: 80,
            quit: false,
            ticks: 0,
            next_gen: 1,
            effects: Vec::new(),
            now_us: crate::audit::model::now_us,
        };
        let screen = app.new_list(view, query.trim().to_string(), filter);
        app.stack.push(Screen::List(Box::new(screen)));
        app.reset_current();
        Ok(app)
    }

    /// The effects asked for since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    fn new_list(&mut self, view: View, query: String, filter: Filter) -> ListScreen {
        let gen = self.next_gen;
        self.next_gen += 1;
        ListScreen::new(gen, view, query, filter)
    }

    pub fn screen(&self) -> &Screen {
        self.stack.last().expect("a screen")
    }

    /// The list on top, if the top screen is a list.
    pub fn list(&self) -> Option<&ListScreen> {
        match self.stack.last() {
            Some(Screen::List(l)) => Some(l),
            _ => None,
        }
    }

    fn list_mut(&mut self) -> Option<&mut ListScreen> {
        match self.stack.last_mut() {
            Some(Screen::List(l)) => Some(l),
            _ => None,
        }
    }

    /// Whether a query of the top screen is still running.
    pub fn busy(&self) -> bool {
        self.list().is_some_and(|l| l.loading || l.refreshing)
    }

    fn info(&mut self, text: impl Into<String>) {
        self.status = Some((text.into(), Level::Info));
    }

    fn error(&mut self, text: impl Into<String>) {
        self.status = Some((text.into(), Level::Error));
    }

    pub fn resize(&mut self, width: u16, height: u16) {
        self.width = width;
        // Title, filter bar, table header and status line.
        self.viewport = (height as usize).saturating_sub(4).max(1);
        let viewport = self.viewport;
        if let Some(list) = self.list_mut() {
            list.clamp(viewport);
        }
        self.lookahead();
    }

    /// Starts the current list over from its newest row (or its anchor).
    fn reset_current(&mut self) {
        let source = self.source;
        let Some(list) = self.list_mut() else { return };
        list.rows.clear();
        list.order = None;
        list.selected = 0;
        list.offset = 0;
        list.next = None;
        list.exhausted = false;
        list.loaded = false;
        list.loading = true;
        list.refreshing = false;
        list.marker = None;
        list.failed = None;
        let after = list.anchor.map(|t| Cursor {
            // Strictly after (time+1, "") in newest-first order: every row at or before `t`.
            time_us: t.saturating_add(1),
            id: String::new(),
        });
        let fetch = Fetch {
            screen: list.gen,
            kind: FetchKind::Reset,
            source,
            view: list.view,
            filter: list.effective_filter(),
            after,
            limit: PAGE,
            since_marker: None,
            top: None,
        };
        self.effects.push(Effect::Fetch(fetch));
    }

    /// Asks for the next page when the selection nears the last loaded row.
    fn lookahead(&mut self) {
        let source = self.source;
        let viewport = self.viewport;
        let Some(list) = self.list_mut() else { return };
        if !list.loaded || list.loading || list.exhausted {
            return;
        }
        if list.selected + viewport * LOOKAHEAD_SCREENS < list.rows.len() {
            return;
        }
        let Some(after) = list.rows.last().map(Record::cursor) else {
            return;
        };
        list.loading = true;
        let fetch = Fetch {
            screen: list.gen,
            kind: FetchKind::More,
            source,
            view: list.view,
            filter: list.effective_filter(),
            after: Some(after),
            limit: PAGE.max(viewport * LOOKAHEAD_SCREENS),
            since_marker: None,
            top: None,
        };
        self.effects.push(Effect::Fetch(fetch));
    }

    /// A timer tick: polls for new rows now and then.
    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.ticks % REFRESH_TICKS != 0 {
            return;
        }
        let source = self.source;
        let Some(list) = self.list_mut() else { return };
        if !list.loaded || list.loading || list.refreshing || list.anchor.is_some() {
            return;
        }
        list.refreshing = true;
        let fetch = Fetch {
            screen: list.gen,
            kind: FetchKind::Refresh,
            source,
            view: list.view,
            filter: list.effective_filter(),
            after: None,
            limit: PAGE,
            since_marker: list.marker,
            top: list.rows.first().map(Record::key),
        };
        self.effects.push(Effect::Fetch(fetch));
    }

    /// An answer from a worker.
    pub fn data(&mut self, response: Response) {
        let viewport = self.viewport;
        match response {
            Response::Rows {
                screen,
                kind,
                rows,
                next,
                marker,
                complete,
                label,
            } => {
                let Some(list) = self.find_list(screen) else {
                    return;
                };
                match kind {
                    FetchKind::Reset => {
                        list.rows = rows;
                        list.exhausted = next.is_none();
                        list.next = next;
                        list.loading = false;
                        list.loaded = true;
                        list.marker = marker;
                        list.selected = 0;
                        list.offset = 0;
                        list.resort();
                    }
                    FetchKind::More => {
                        list.loading = false;
                        list.exhausted = next.is_none();
                        list.next = next;
                        list.keeping_place(viewport, |list| {
                            let last = list.rows.last().map(Record::key);
                            list.rows.extend(
                                rows.into_iter()
                                    .filter(|r| last.is_none_or(|l| r.key() < l)),
                            );
                        });
                    }
                    FetchKind::Refresh => {
                        list.refreshing = false;
                        list.marker = marker;
                        list.keeping_place(viewport, |list| {
                            if complete {
                                merge(list, rows);
                            } else {
                                // More arrived than a refresh reads: start from the newest.
                                list.rows = rows;
                                list.exhausted = next.is_none();
                                list.next = next;
                            }
                        });
                    }
                }
                self.source_label = label;
                self.lookahead();
            }
            Response::Unchanged { screen } => {
                if let Some(list) = self.find_list(screen) {
                    list.refreshing = false;
                }
            }
            Response::Failed {
                screen,
                kind,
                message,
            } => {
                if let Some(list) = self.find_list(screen) {
                    match kind {
                        FetchKind::Refresh => list.refreshing = false,
                        _ => {
                            list.loading = false;
                            // A failed page ends the listing here rather than retrying forever.
                            list.exhausted = true;
                            list.loaded = true;
                            list.failed = Some(message.clone());
                        }
                    }
                    self.error(message);
                }
            }
            Response::ExportProgress { rows } => self.info(format!("exporting… {rows} rows")),
            Response::Exported { path, rows } => {
                self.info(format!("exported {rows} rows to {}", path.display()))
            }
            Response::ExportFailed { message } => self.error(message),
        }
    }

    fn find_list(&mut self, gen: u64) -> Option<&mut ListScreen> {
        self.stack.iter_mut().find_map(|s| match s {
            Screen::List(l) if l.gen == gen => Some(l.as_mut()),
            _ => None,
        })
    }

    /// The runner copied text; `how` says where it went.
    pub fn copied(&mut self, how: &str) {
        self.info(format!("copied the row as JSON ({how})"));
    }

    pub fn key(&mut self, key: KeyEvent) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && key.code == KeyCode::Char('c') {
            self.quit();
            return;
        }
        match self.mode.clone() {
            Mode::Normal => self.normal_key(key),
            Mode::Help => {
                if matches!(
                    key.code,
                    KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q') | KeyCode::Enter
                ) {
                    self.mode = Mode::Normal;
                }
            }
            Mode::Filter { mut input, .. } => match key.code {
                KeyCode::Esc => self.mode = Mode::Normal,
                KeyCode::Enter => self.apply_filter(&input.text),
                _ => {
                    input.edit(&key);
                    self.mode = Mode::Filter { input, error: None };
                }
            },
            Mode::Jump { mut input, .. } => match key.code {
                KeyCode::Esc => self.mode = Mode::Normal,
                KeyCode::Enter => self.apply_jump(&input.text),
                _ => {
                    input.edit(&key);
                    self.mode = Mode::Jump { input, error: None };
                }
            },
            Mode::Export { mut input, .. } => match key.code {
                KeyCode::Esc => self.mode = Mode::Normal,
                KeyCode::Enter => self.apply_export(&input.text),
                _ => {
                    input.edit(&key);
                    self.mode = Mode::Export { input, error: None };
                }
            },
        }
    }

    pub fn quit(&mut self) {
        self.quit = true;
        self.effects.push(Effect::Quit);
    }

    fn normal_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let page = self.viewport as isize;
        match key.code {
            KeyCode::Char('q') => self.quit(),
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Esc | KeyCode::Backspace => self.back(),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::PageDown | KeyCode::Char(' ') => self.move_by(page),
            KeyCode::Char('f') if ctrl => self.move_by(page),
            KeyCode::PageUp => self.move_by(-page),
            KeyCode::Char('b') if ctrl => self.move_by(-page),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX / 2),
            KeyCode::Enter => self.open(),
            KeyCode::Tab | KeyCode::BackTab | KeyCode::Char('v') => self.toggle_view(),
            KeyCode::Char('r') => self.toggle_source(),
            KeyCode::Char('/') => {
                if let Some(list) = self.list() {
                    let input = Input::new(&list.query);
                    self.mode = Mode::Filter { input, error: None };
                }
            }
            KeyCode::Char('c') if self.list().is_some_and(|l| !l.query.is_empty()) => {
                self.apply_filter("");
            }
            KeyCode::Char('t') if self.list().is_some() => {
                self.mode = Mode::Jump {
                    input: Input::default(),
                    error: None,
                };
            }
            KeyCode::Char('e') => {
                if let Some(list) = self.list() {
                    let name = default_export_name(list.view, (self.now_us)());
                    self.mode = Mode::Export {
                        input: Input::new(&name),
                        error: None,
                    };
                }
            }
            KeyCode::Char('s') => self.cycle_sort(),
            KeyCode::Char('S') => self.reverse_sort(),
            KeyCode::Char('y') => self.copy(),
            _ => {}
        }
    }

    fn move_by(&mut self, delta: isize) {
        let viewport = self.viewport;
        match self.stack.last_mut() {
            Some(Screen::List(list)) => {
                if list.rows.is_empty() {
                    return;
                }
                let last = list.rows.len() - 1;
                list.selected = (list.selected as isize)
                    .saturating_add(delta)
                    .clamp(0, last as isize) as usize;
                list.clamp(viewport);
            }
            Some(Screen::Detail { scroll, .. }) => {
                *scroll = (*scroll as isize).saturating_add(delta).clamp(0, 200) as u16;
            }
            None => {}
        }
        self.lookahead();
    }

    fn back(&mut self) {
        if self.stack.len() > 1 {
            self.stack.pop();
            self.status = None;
            // The list below may have missed rows while hidden: the next tick refreshes it.
        } else {
            self.status = None;
        }
    }

    fn open(&mut self) {
        let Some(list) = self.list() else { return };
        let Some(record) = list.selected_row().cloned() else {
            return;
        };
        match record {
            Record::Command(row) => {
                let filter = Filter {
                    command_id: Some(row.command.id),
                    ..Filter::default()
                };
                let mut screen = self.new_list(View::Calls, String::new(), filter);
                screen.within = Some((row.command.id, row.command.command_line.clone()));
                self.stack.push(Screen::List(Box::new(screen)));
                self.reset_current();
            }
            Record::Call(_) => self.stack.push(Screen::Detail { record, scroll: 0 }),
        }
    }

    fn toggle_view(&mut self) {
        self.stack.truncate(1);
        let Some(root) = self.list() else { return };
        let view = match root.view {
            View::Commands => View::Calls,
            View::Calls => View::Commands,
        };
        let (query, filter, anchor) = (root.query.clone(), root.filter.clone(), root.anchor);
        let mut screen = self.new_list(view, query, filter);
        screen.anchor = anchor;
        self.stack[0] = Screen::List(Box::new(screen));
        self.reset_current();
    }

    fn toggle_source(&mut self) {
        self.source = match self.source {
            SourceKind::Local => SourceKind::Remote,
            SourceKind::Remote => SourceKind::Local,
        };
        self.source_label = self.source.name().to_string();
        self.stack.truncate(1);
        let Some(root) = self.list() else { return };
        let (view, query, filter) = (root.view, root.query.clone(), root.filter.clone());
        let screen = self.new_list(view, query, filter);
        self.stack[0] = Screen::List(Box::new(screen));
        self.info(format!("source: {}", self.source.name()));
        self.reset_current();
    }

    fn apply_filter(&mut self, text: &str) {
        let parsed = Filter::parse_query(text);
        let gen = self.next_gen;
        let Some(list) = self.list_mut() else {
            self.mode = Mode::Normal;
            return;
        };
        match parsed {
            Ok(mut filter) => {
                if let (Some((id, _)), None) = (&list.within, filter.command_id) {
                    filter.command_id = Some(*id);
                }
                list.filter = filter;
                list.query = text.trim().to_string();
                list.gen = gen;
                self.next_gen += 1;
                self.mode = Mode::Normal;
                self.status = None;
                self.reset_current();
            }
            Err(e) => {
                self.mode = Mode::Filter {
                    input: Input::new(text),
                    error: Some(e.to_string()),
                };
            }
        }
    }

    fn apply_jump(&mut self, text: &str) {
        let text = text.trim();
        let anchor = if text.is_empty() {
            None
        } else {
            match parse_time_us(text) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.mode = Mode::Jump {
                        input: Input::new(text),
                        error: Some(e.to_string()),
                    };
                    return;
                }
            }
        };
        let gen = self.next_gen;
        self.next_gen += 1;
        self.mode = Mode::Normal;
        if let Some(list) = self.list_mut() {
            list.anchor = anchor;
            list.gen = gen;
        }
        match anchor {
            Some(t) => self.info(format!(
                "showing rows at or before {} (t, then Enter: back to live)",
                crate::audit::model::format_time_us(t)
            )),
            None => self.info("live"),
        }
        self.reset_current();
    }

    fn apply_export(&mut self, text: &str) {
        let path = text.trim();
        if path.is_empty() {
            self.mode = Mode::Export {
                input: Input::new(text),
                error: Some("type a file name".into()),
            };
            return;
        }
        let source = self.source;
        let Some(list) = self.list() else { return };
        let request = ExportRequest {
            source,
            view: list.view,
            filter: list.effective_filter(),
            path: path.into(),
        };
        self.mode = Mode::Normal;
        self.info(format!("exporting to {path}…"));
        self.effects.push(Effect::Export(request));
    }

    fn cycle_sort(&mut self) {
        let viewport = self.viewport;
        let Some(list) = self.list_mut() else { return };
        let n = columns(list.view).len();
        let sort = match list.sort {
            None => Some(Sort {
                column: 0,
                ascending: true,
            }),
            Some(s) if s.column + 1 < n => Some(Sort {
                column: s.column + 1,
                ascending: s.ascending,
            }),
            Some(_) => None,
        };
        list.keeping_place(viewport, |l| l.sort = sort);
        let text = match sort {
            Some(s) => format!(
                "sorted by {} (the {} loaded rows)",
                columns(list.view)[s.column].title(),
                list.rows.len()
            ),
            None => "newest first".to_string(),
        };
        self.info(text);
    }

    fn reverse_sort(&mut self) {
        let viewport = self.viewport;
        let Some(list) = self.list_mut() else { return };
        let sort = match list.sort {
            Some(s) => Sort {
                ascending: !s.ascending,
                ..s
            },
            None => Sort {
                column: 0,
                ascending: true,
            },
        };
        list.keeping_place(viewport, |l| l.sort = Some(sort));
    }

    fn copy(&mut self) {
        let record = match self.stack.last() {
            Some(Screen::List(list)) => list.selected_row(),
            Some(Screen::Detail { record, .. }) => Some(record),
            None => None,
        };
        if let Some(record) = record {
            self.effects.push(Effect::Copy(record.to_json()));
        }
    }

    /// The column sorted on, for the header.
    pub fn sorted_column(&self) -> Option<(Col, bool)> {
        let list = self.list()?;
        let sort = list.sort?;
        Some((columns(list.view)[sort.column], sort.ascending))
    }
}

/// Merges a refresh (the newest rows, newest first) into the loaded rows: known ids are
/// replaced (a command that ended, a stream that closed), new ones inserted in order.
fn merge(list: &mut ListScreen, fresh: Vec<Record>) {
    for record in fresh {
        let key = record.key();
        match list.rows.binary_search_by(|r| key.cmp(&r.key())) {
            Ok(i) => list.rows[i] = record,
            Err(i) if i < list.rows.len() || list.exhausted => list.rows.insert(i, record),
            // Beyond the loaded rows: paging will bring it.
            Err(_) => {}
        }
    }
}

/// `ztk-audit-calls-20261124-223000.csv`
pub fn default_export_name(view: View, now_us: i64) -> String {
    let t = crate::audit::model::format_time_us(now_us);
    // 2026-11-24T22:30:00.123456Z
    let stamp: String = format!("{}-{}", &t[0..10], &t[11..19])
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '-')
        .collect();
    let view = match view {
        View::Commands => "commands",
        View::Calls => "calls",
    };
    format!("ztk-audit-{view}-{stamp}.csv")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::{ApiCall, CallRow, Command, CommandRow};

    /// A fixed clock: 2026-11-29T12:00:00Z.
    pub const NOW: i64 = 1_795_953_600_000_000;

    fn id(n: u64) -> Uuid {
        Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n as u128)
    }

    /// Command `n`, `n` minutes before NOW (so higher n is older).
    pub fn command(n: u64) -> Record {
        let started = NOW - n as i64 * 60_000_000;
        let verb = if n % 5 == 0 { "delete" } else { "get" };
        Record::Command(Box::new(CommandRow {
            command: Command {
                id: id(n),
                started_us: started,
                ended_us: Some(started + 250_000),
                user: ["alice", "bob"][n as usize % 2].into(),
                cluster: "prod".into(),
                argv: vec!["kubectl".into(), verb.into(), "pods".into()],
                command_line: format!("kubectl {verb} pods #{n}"),
                exit_code: Some(0),
                api_calls: 2,
                ..Default::default()
            },
            calls: 2,
            statuses: [("2xx".to_string(), 1), ("4xx".to_string(), 1)].into(),
            duration_us: Some(250_000),
        }))
    }

    /// Call `n`, `n` seconds before NOW.
    pub fn call(n: u64) -> Record {
        let verbs = ["get", "list", "delete", "create"];
        Record::Call(Box::new(CallRow {
            call: ApiCall {
                id: id(1000 + n),
                time_us: NOW - n as i64 * 1_000_000,
                user: "alice".into(),
                cluster: "prod".into(),
                namespace: "payments".into(),
                resource: "pods".into(),
                name: format!("web-{n}"),
                api_version: "v1".into(),
                verb: verbs[n as usize % 4].into(),
                method: "GET".into(),
                path: "/api/v1/namespaces/payments/pods".into(),
                status: [200, 404, 500, 201][n as usize % 4],
                duration_us: 1_500 + n as i64,
                bytes_out: 100,
                user_agent: "kubectl/v1.33.0".into(),
                kubectl_session: "sess-1".into(),
                command_id: Some(id(1)),
                request_id: Some(id(1000 + n)),
                decision: "allow".into(),
                ..Default::default()
            },
            command_line: Some("kubectl get pods".into()),
            client_duration_us: Some(1_500 + n as i64),
            gateway_duration_us: None,
        }))
    }

    pub fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    pub fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn fetches(app: &mut App) -> Vec<Fetch> {
        app.take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Fetch(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    fn one_fetch(app: &mut App) -> Fetch {
        let mut f = fetches(app);
        assert_eq!(f.len(), 1, "{f:?}");
        f.remove(0)
    }

    fn rows(screen: u64, kind: FetchKind, rows: Vec<Record>, more: bool) -> Response {
        let next = if more {
            rows.last().map(Record::cursor)
        } else {
            None
        };
        Response::Rows {
            screen,
            kind,
            rows,
            next,
            marker: Some(7),
            complete: true,
            label: "local test.db".into(),
        }
    }

    /// An app on `view` whose first page (`n` rows, more behind them) has arrived.
    pub fn loaded(view: View, n: u64, more: bool) -> App {
        let make = if view == View::Commands {
            command
        } else {
            call
        };
        loaded_with(view, (0..n).map(make).collect(), more)
    }

    /// An app on `view` whose first page, these records, has arrived.
    pub fn loaded_with(view: View, records: Vec<Record>, more: bool) -> App {
        let mut app = App::new(SourceKind::Local, view, "").unwrap();
        app.now_us = || NOW;
        app.resize(80, 24);
        let fetch = one_fetch(&mut app);
        app.data(rows(fetch.screen, FetchKind::Reset, records, more));
        let _ = app.take_effects();
        app
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            app.key(key(KeyCode::Char(c)));
        }
    }

    fn selected_id(app: &App) -> Uuid {
        app.list().unwrap().selected_row().unwrap().id()
    }

    #[test]
    fn opens_with_one_page_query_of_the_given_view_and_filter() {
        let mut app = App::new(SourceKind::Remote, View::Calls, "user:alice status:5xx").unwrap();
        let f = one_fetch(&mut app);
        assert_eq!(f.kind, FetchKind::Reset);
        assert_eq!(f.source, SourceKind::Remote);
        assert_eq!(f.view, View::Calls);
        assert_eq!(f.limit, PAGE);
        assert_eq!(f.after, None);
        assert_eq!(f.filter.users, vec!["alice".to_string()]);
        assert!(app.busy());
        assert!(App::new(SourceKind::Local, View::Calls, "status:9xx").is_err());
    }

    #[test]
    fn moving_clamps_and_scrolls_the_viewport() {
        let mut app = loaded(View::Commands, 100, false);
        assert_eq!(app.viewport, 20);
        app.key(key(KeyCode::Up));
        assert_eq!(app.list().unwrap().selected, 0);
        for _ in 0..25 {
            app.key(key(KeyCode::Char('j')));
        }
        let l = app.list().unwrap();
        assert_eq!((l.selected, l.offset), (25, 6));
        app.key(key(KeyCode::PageDown));
        assert_eq!(app.list().unwrap().selected, 45);
        app.key(key(KeyCode::End));
        let l = app.list().unwrap();
        assert_eq!((l.selected, l.offset), (99, 80));
        app.key(key(KeyCode::PageUp));
        assert_eq!(app.list().unwrap().selected, 79);
        app.key(key(KeyCode::Home));
        let l = app.list().unwrap();
        assert_eq!((l.selected, l.offset), (0, 0));
        // Everything was loaded (no next page): no query asked.
        assert!(fetches(&mut app).is_empty());
    }

    #[test]
    fn scrolling_near_the_end_fetches_the_next_page_once() {
        let mut app = loaded(View::Commands, 60, true);
        // 60 rows, 20 on screen: two screens of lookahead means row 20 asks for more.
        for _ in 0..19 {
            app.key(key(KeyCode::Down));
        }
        assert!(fetches(&mut app).is_empty());
        app.key(key(KeyCode::Down));
        let f = one_fetch(&mut app);
        assert_eq!(f.kind, FetchKind::More);
        assert_eq!(f.after, Some(command(59).cursor()));
        // While it runs, more scrolling asks nothing more.
        app.key(key(KeyCode::Down));
        assert!(fetches(&mut app).is_empty());
        app.data(rows(
            f.screen,
            FetchKind::More,
            (60..260).map(command).collect(),
            false,
        ));
        let l = app.list().unwrap();
        assert_eq!(l.len(), 260);
        assert!(l.exhausted);
        assert_eq!(l.selected, 21);
        assert_eq!(selected_id(&app), command(21).id());
        // A stale answer (a screen that no longer exists) changes nothing.
        app.data(rows(999, FetchKind::More, vec![command(900)], false));
        assert_eq!(app.list().unwrap().len(), 260);
    }

    #[test]
    fn live_refresh_merges_new_rows_and_keeps_selection_and_scroll() {
        let mut app = loaded(View::Commands, 100, false);
        // Scrolled: row 30 selected, rows 11.. on screen.
        for _ in 0..30 {
            app.key(key(KeyCode::Down));
        }
        let (sel, top) = (selected_id(&app), app.list().unwrap().offset);
        assert_eq!(top, 11);
        app.tick();
        assert!(fetches(&mut app).is_empty(), "refresh every other tick");
        app.tick();
        let f = one_fetch(&mut app);
        assert_eq!(f.kind, FetchKind::Refresh);
        assert_eq!(f.since_marker, Some(7));
        assert_eq!(f.top, Some(command(0).key()));
        // Two new commands (newer than every row) and an update of a shown one.
        let newer = |n: i64| match command(500 + n as u64) {
            Record::Command(mut c) => {
                c.command.started_us = NOW + n * 1_000_000;
                Record::Command(c)
            }
            _ => unreachable!(),
        };
        let mut ended = command(3);
        if let Record::Command(c) = &mut ended {
            c.command.exit_code = Some(1);
        }
        app.data(rows(
            f.screen,
            FetchKind::Refresh,
            vec![
                newer(2),
                newer(1),
                command(0),
                command(1),
                command(2),
                ended,
            ],
            true,
        ));
        let l = app.list().unwrap();
        assert_eq!(l.len(), 102);
        assert_eq!(l.row(0).unwrap().id(), newer(2).id());
        assert_eq!(selected_id(&app), sel, "the same record stays selected");
        assert_eq!(l.selected, 32);
        assert_eq!(l.offset, 13, "the same rows stay on screen");
        match l.rows.iter().find(|r| r.id() == command(3).id()).unwrap() {
            Record::Command(c) => assert_eq!(c.command.exit_code, Some(1)),
            _ => unreachable!(),
        }
        assert!(!app.busy());
    }

    #[test]
    fn at_the_top_new_rows_show_and_the_selection_follows_its_record() {
        let mut app = loaded(View::Calls, 10, false);
        app.key(key(KeyCode::Down));
        app.tick();
        app.tick();
        let f = one_fetch(&mut app);
        let mut newest = call(0);
        if let Record::Call(c) = &mut newest {
            c.call.id = Uuid::now_v7();
            c.call.time_us = NOW + 1;
        }
        app.data(rows(
            f.screen,
            FetchKind::Refresh,
            vec![newest.clone()],
            false,
        ));
        let l = app.list().unwrap();
        assert_eq!(l.offset, 0, "the top stays in view, so the new row shows");
        assert_eq!(l.row(0).unwrap().id(), newest.id());
        assert_eq!(selected_id(&app), call(1).id());
    }

    #[test]
    fn a_refresh_that_cannot_close_the_gap_starts_over_keeping_the_selection_if_it_can() {
        let mut app = loaded(View::Calls, 10, false);
        app.key(key(KeyCode::Down));
        app.tick();
        app.tick();
        let f = one_fetch(&mut app);
        app.data(Response::Rows {
            screen: f.screen,
            kind: FetchKind::Refresh,
            rows: (1..5).map(call).collect(),
            next: Some(call(4).cursor()),
            marker: Some(9),
            complete: false,
            label: "x".into(),
        });
        let l = app.list().unwrap();
        assert_eq!(l.len(), 4);
        assert!(!l.exhausted);
        assert_eq!(selected_id(&app), call(1).id());
        assert_eq!(l.marker, Some(9));
    }

    #[test]
    fn an_unchanged_source_ends_the_refresh_and_the_next_tick_asks_again() {
        let mut app = loaded(View::Calls, 3, false);
        app.tick();
        app.tick();
        let f = one_fetch(&mut app);
        app.tick();
        app.tick();
        assert!(fetches(&mut app).is_empty(), "one refresh at a time");
        app.data(Response::Unchanged { screen: f.screen });
        app.tick();
        app.tick();
        assert_eq!(one_fetch(&mut app).kind, FetchKind::Refresh);
    }

    #[test]
    fn the_filter_bar_applies_valid_filters_and_shows_errors_inline() {
        let mut app = loaded(View::Calls, 10, false);
        app.key(key(KeyCode::Char('/')));
        typed(&mut app, "status:9xx");
        app.key(key(KeyCode::Enter));
        match &app.mode {
            Mode::Filter { input, error } => {
                assert_eq!(input.text, "status:9xx");
                assert!(error.as_deref().unwrap().contains("invalid status"));
            }
            m => panic!("{m:?}"),
        }
        assert!(fetches(&mut app).is_empty());
        let old = app.list().unwrap().gen;
        app.key(ctrl('u'));
        typed(&mut app, "user:bob verb:delete");
        app.key(key(KeyCode::Enter));
        assert_eq!(app.mode, Mode::Normal);
        let f = one_fetch(&mut app);
        assert_eq!(f.kind, FetchKind::Reset);
        assert_eq!(f.filter.users, vec!["bob".to_string()]);
        assert_eq!(f.filter.verbs, vec!["delete".to_string()]);
        assert_ne!(f.screen, old);
        assert_eq!(app.list().unwrap().query, "user:bob verb:delete");
        assert!(app.list().unwrap().is_empty());
        // The old listing's late answer is dropped.
        app.data(rows(old, FetchKind::More, vec![call(50)], false));
        assert!(app.list().unwrap().is_empty());
        // Esc leaves the filter as it was; c clears it.
        app.key(key(KeyCode::Char('/')));
        typed(&mut app, " ns:x");
        app.key(key(KeyCode::Esc));
        assert_eq!(app.list().unwrap().query, "user:bob verb:delete");
        app.key(key(KeyCode::Char('c')));
        assert_eq!(one_fetch(&mut app).filter, Filter::default());
    }

    #[test]
    fn enter_drills_down_and_esc_goes_back() {
        let mut app = loaded(View::Commands, 5, false);
        app.key(key(KeyCode::Down));
        app.key(key(KeyCode::Enter));
        let f = one_fetch(&mut app);
        assert_eq!(f.view, View::Calls);
        assert_eq!(f.filter.command_id, Some(command(1).id()));
        assert_eq!(app.stack.len(), 2);
        assert_eq!(
            app.list().unwrap().within.as_ref().unwrap().1,
            "kubectl get pods #1"
        );
        app.data(rows(
            f.screen,
            FetchKind::Reset,
            (0..3).map(call).collect(),
            false,
        ));
        // A filter inside a command keeps to the command.
        app.key(key(KeyCode::Char('/')));
        typed(&mut app, "status:4xx");
        app.key(key(KeyCode::Enter));
        let g = one_fetch(&mut app);
        assert_eq!(g.filter.command_id, Some(command(1).id()));
        app.data(rows(g.screen, FetchKind::Reset, vec![call(1)], false));
        app.key(key(KeyCode::Enter));
        match app.screen() {
            Screen::Detail { record, .. } => assert_eq!(record.id(), call(1).id()),
            s => panic!("{s:?}"),
        }
        app.key(key(KeyCode::Down));
        app.key(key(KeyCode::Esc));
        assert!(app.list().unwrap().within.is_some());
        app.key(key(KeyCode::Esc));
        assert_eq!(app.stack.len(), 1);
        assert_eq!(selected_id(&app), command(1).id());
        app.key(key(KeyCode::Esc));
        assert_eq!(app.stack.len(), 1);
        assert!(!app.quit);
    }

    #[test]
    fn tab_switches_the_view_and_r_the_source() {
        let mut app = loaded(View::Commands, 5, false);
        app.key(key(KeyCode::Char('/')));
        typed(&mut app, "user:alice");
        app.key(key(KeyCode::Enter));
        let _ = app.take_effects();
        app.key(key(KeyCode::Tab));
        let f = one_fetch(&mut app);
        assert_eq!((f.view, f.source), (View::Calls, SourceKind::Local));
        assert_eq!(f.filter.users, vec!["alice".to_string()]);
        app.key(key(KeyCode::Char('r')));
        let f = one_fetch(&mut app);
        assert_eq!((f.view, f.source), (View::Calls, SourceKind::Remote));
        assert_eq!(app.source, SourceKind::Remote);
        app.key(key(KeyCode::Char('v')));
        assert_eq!(one_fetch(&mut app).view, View::Commands);
    }

    #[test]
    fn sorting_orders_the_loaded_rows_and_keeps_the_selection() {
        let mut app = loaded(View::Calls, 8, false);
        app.key(key(KeyCode::Down));
        app.key(key(KeyCode::Down));
        let sel = selected_id(&app);
        app.key(key(KeyCode::Char('s')));
        // TIME ascending: oldest first.
        let l = app.list().unwrap();
        assert_eq!(l.row(0).unwrap().id(), call(7).id());
        assert_eq!(selected_id(&app), sel);
        assert_eq!(app.sorted_column(), Some((Col::Time, true)));
        for _ in 0..7 {
            app.key(key(KeyCode::Char('s')));
        }
        assert_eq!(app.sorted_column(), Some((Col::Status, true)));
        let codes: Vec<String> = (0..8)
            .map(|i| Col::Status.text(app.list().unwrap().row(i).unwrap()))
            .collect();
        assert_eq!(
            codes,
            ["200", "200", "201", "201", "404", "404", "500", "500"]
        );
        app.key(key(KeyCode::Char('S')));
        assert_eq!(app.sorted_column(), Some((Col::Status, false)));
        assert_eq!(Col::Status.text(app.list().unwrap().row(0).unwrap()), "500");
        assert_eq!(selected_id(&app), sel);
        for _ in 0..3 {
            app.key(key(KeyCode::Char('s')));
        }
        assert_eq!(app.sorted_column(), None);
        assert_eq!(app.list().unwrap().row(0).unwrap().id(), call(0).id());
        assert!(fetches(&mut app).is_empty(), "sorting queries nothing");
    }

    #[test]
    fn jumping_to_a_time_pages_from_there_without_live_refresh() {
        let mut app = loaded(View::Calls, 8, false);
        app.key(key(KeyCode::Char('t')));
        typed(&mut app, "yesterday");
        app.key(key(KeyCode::Enter));
        assert!(
            matches!(&app.mode, Mode::Jump { error: Some(e), .. } if e.contains("invalid time"))
        );
        app.key(ctrl('u'));
        typed(&mut app, "2026-11-20T00:00:00Z");
        app.key(key(KeyCode::Enter));
        let t = parse_time_us("2026-11-20T00:00:00Z").unwrap();
        let f = one_fetch(&mut app);
        assert_eq!(
            f.after,
            Some(Cursor {
                time_us: t + 1,
                id: String::new()
            })
        );
        assert_eq!(f.filter.until_us, Some(t + 1));
        assert_eq!(app.list().unwrap().anchor, Some(t));
        app.data(rows(f.screen, FetchKind::Reset, vec![call(9000)], false));
        app.tick();
        app.tick();
        assert!(fetches(&mut app).is_empty(), "no live refresh in the past");
        app.key(key(KeyCode::Char('t')));
        app.key(key(KeyCode::Enter));
        let f = one_fetch(&mut app);
        assert_eq!((f.after, f.filter.until_us), (None, None));
    }

    #[test]
    fn export_asks_for_a_file_and_writes_the_filtered_view() {
        let mut app = loaded(View::Calls, 3, false);
        app.key(key(KeyCode::Char('/')));
        typed(&mut app, "ns:payments");
        app.key(key(KeyCode::Enter));
        let _ = app.take_effects();
        app.key(key(KeyCode::Char('e')));
        match &app.mode {
            Mode::Export { input, .. } => {
                assert_eq!(input.text, "ztk-audit-calls-2026-11-29-120000.csv")
            }
            m => panic!("{m:?}"),
        }
        app.key(ctrl('u'));
        app.key(key(KeyCode::Enter));
        assert!(matches!(&app.mode, Mode::Export { error: Some(_), .. }));
        typed(&mut app, "out.csv");
        app.key(key(KeyCode::Enter));
        let effects = app.take_effects();
        assert_eq!(
            effects,
            vec![Effect::Export(ExportRequest {
                source: SourceKind::Local,
                view: View::Calls,
                filter: Filter::parse_query("ns:payments").unwrap(),
                path: "out.csv".into(),
            })]
        );
        app.data(Response::Exported {
            path: "out.csv".into(),
            rows: 3,
        });
        assert_eq!(
            app.status,
            Some(("exported 3 rows to out.csv".into(), Level::Info))
        );
        app.data(Response::ExportFailed {
            message: "export failed: disk full".into(),
        });
        assert_eq!(app.status.as_ref().unwrap().1, Level::Error);
    }

    #[test]
    fn y_copies_the_selected_row_as_json() {
        let mut app = loaded(View::Calls, 3, false);
        app.key(key(KeyCode::Down));
        app.key(key(KeyCode::Char('y')));
        let effects = app.take_effects();
        let [Effect::Copy(text)] = effects.as_slice() else {
            panic!("{effects:?}")
        };
        let value: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["id"], call(1).id().to_string());
        assert_eq!(value["kubectl_session"], "sess-1");
        app.copied("OSC 52 to the terminal");
        assert!(app.status.as_ref().unwrap().0.contains("OSC 52"));
    }

    #[test]
    fn help_quit_and_failures() {
        let mut app = loaded(View::Calls, 3, true);
        app.key(key(KeyCode::Char('?')));
        assert_eq!(app.mode, Mode::Help);
        app.key(key(KeyCode::Char('j')));
        assert_eq!(app.list().unwrap().selected, 0, "help swallows keys");
        app.key(key(KeyCode::Esc));
        assert_eq!(app.mode, Mode::Normal);
        app.key(key(KeyCode::Char('/')));
        app.key(key(KeyCode::Char('q')));
        assert!(!app.quit, "q types in the filter bar");
        app.key(ctrl('c'));
        assert!(app.quit);
        assert!(app.take_effects().contains(&Effect::Quit));

        let mut app = loaded(View::Calls, 60, true);
        for _ in 0..25 {
            app.key(key(KeyCode::Down));
        }
        let f = one_fetch(&mut app);
        app.data(Response::Failed {
            screen: f.screen,
            kind: FetchKind::More,
            message: "the gateway's audit query failed: 503".into(),
        });
        assert!(!app.busy());
        assert_eq!(app.status.as_ref().unwrap().1, Level::Error);
        app.key(key(KeyCode::Down));
        assert!(
            fetches(&mut app).is_empty(),
            "no retry loop after a failure"
        );
    }

    #[test]
    fn input_editing() {
        let mut input = Input::new("user:alice ns:prod");
        input.edit(&ctrl('w'));
        assert_eq!(input.text, "user:alice ");
        input.edit(&key(KeyCode::Left));
        input.edit(&key(KeyCode::Backspace));
        assert_eq!(input.text, "user:alic ");
        input.edit(&key(KeyCode::Char('é')));
        input.edit(&key(KeyCode::End));
        input.edit(&key(KeyCode::Char('x')));
        assert_eq!(input.text, "user:alicé x");
        input.edit(&key(KeyCode::Home));
        input.edit(&key(KeyCode::Delete));
        assert_eq!(input.text, "ser:alicé x");
        input.edit(&key(KeyCode::End));
        input.edit(&ctrl('u'));
        assert_eq!((input.text.as_str(), input.cursor), ("", 0));
        assert!(!input.edit(&key(KeyCode::Enter)));
    }
}

#[cfg(test)]
mod readme {
    #[test]
    fn the_readme_lists_every_key_binding() {
        let readme = include_str!("../../README.md");
        for (key, _) in super::KEYS.iter().filter(|(k, _)| !k.is_empty()) {
            assert!(
                readme.contains(&format!("| `{key}` |")),
                "README.md's TUI key table lacks {key}"
            );
        }
    }
}
