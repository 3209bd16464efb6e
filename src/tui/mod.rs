//! `ztk audit tui`: a full-screen, live audit browser.
//!
//! `app` is the state machine (pure: events in, effects out), `ui` draws it, `source` runs the
//! queries on a worker thread. This module wires them to a terminal: an input thread and the
//! worker feed one channel, the loop applies every waiting event, then draws once.

pub mod app;
pub mod bench;
pub mod clipboard;
pub mod columns;
pub mod source;
pub mod ui;

use std::io::Write;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self as term_event, KeyEvent};
use ratatui::crossterm::{execute, terminal};
use ratatui::prelude::CrosstermBackend;
use ratatui::Terminal;

use app::{App, Effect};
use source::{spawn_export, spawn_worker, Job, Response, Sources};

/// Everything the app reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Key(KeyEvent),
    Resize(u16, u16),
    Data(Response),
    Tick,
    /// SIGTERM or SIGHUP: quit like `q`, restoring the terminal.
    Signal,
}

/// How often the app ticks (and so how often it may poll for new rows).
pub const TICK: Duration = Duration::from_millis(250);

/// Applies one event to the app.
pub fn apply(app: &mut App, event: Event) {
    match event {
        Event::Key(key) => app.key(key),
        Event::Resize(w, h) => app.resize(w, h),
        Event::Data(response) => app.data(response),
        Event::Tick => app.tick(),
        Event::Signal => app.quit(),
    }
}

/// Runs the effects the app asked for: queries to the worker, exports and copies.
pub struct Effects {
    jobs: Sender<Job>,
    answers: Sender<Event>,
    openers: [source::Opener; 2],
    /// Where OSC 52 goes (the terminal); None in benchmarks.
    osc52: bool,
}

impl Effects {
    /// Starts the query worker over `sources`; answers arrive on the returned receiver.
    pub fn start(sources: Sources, osc52: bool) -> (Effects, Receiver<Event>) {
        let (answers, events) = channel();
        let (jobs, job_rx) = channel();
        let openers = [
            sources.opener(source::SourceKind::Local),
            sources.opener(source::SourceKind::Remote),
        ];
        spawn_worker(sources, job_rx, answers.clone());
        (
            Effects {
                jobs,
                answers,
                openers,
                osc52,
            },
            events,
        )
    }

    /// A sender for other event producers (the input thread).
    pub fn sender(&self) -> Sender<Event> {
        self.answers.clone()
    }

    /// Runs the app's pending effects; false once it asked to quit.
    pub fn run(&self, app: &mut App) -> bool {
        let mut running = true;
        for effect in app.take_effects() {
            match effect {
                Effect::Fetch(fetch) => {
                    let _ = self.jobs.send(Job::Fetch(Box::new(fetch)));
                }
                Effect::Export(request) => {
                    let opener = match request.source {
                        source::SourceKind::Local => self.openers[0].clone(),
                        source::SourceKind::Remote => self.openers[1].clone(),
                    };
                    spawn_export(opener, request, self.answers.clone());
                }
                Effect::Copy(text) => {
                    let how = clipboard::copy(&text, self.osc52);
                    app.copied(&how);
                }
                Effect::Quit => running = false,
            }
        }
        running
    }
}

impl Drop for Effects {
    fn drop(&mut self) {
        let _ = self.jobs.send(Job::Stop);
    }
}

/// Puts the terminal back: cooked mode, main screen, cursor shown. Safe to call twice.
fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}

/// Restores the terminal when dropped: on return, on error and while unwinding from a panic.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Turns SIGTERM and SIGHUP (a closed terminal window) into `Event::Signal`, so the app quits
/// through its normal path and the terminal is restored.
fn watch_signals(events: Sender<Event>) {
    let _ = std::thread::Builder::new()
        .name("tui-signals".into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut term), Ok(mut hup)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::hangup()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                let _ = events.send(Event::Signal);
            });
        });
}

/// Runs the app full-screen until it quits.
pub fn run(mut app: App, sources: Sources) -> anyhow::Result<()> {
    app.color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // A panic restores the terminal before its message prints, so the message stays readable.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    terminal::enable_raw_mode()?;
    let _guard = TerminalGuard;
    execute!(std::io::stdout(), terminal::EnterAlternateScreen)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    terminal.clear()?;
    let size = terminal.size()?;
    app.resize(size.width, size.height);

    let (effects, events) = Effects::start(sources, true);
    let input = effects.sender();
    // Raw mode turns Ctrl-C into a key, which the app handles as quit.
    std::thread::Builder::new()
        .name("tui-input".into())
        .spawn(move || loop {
            let event = match term_event::read() {
                Ok(term_event::Event::Key(key)) => Event::Key(key),
                Ok(term_event::Event::Resize(w, h)) => Event::Resize(w, h),
                Ok(_) => continue,
                Err(_) => break,
            };
            if input.send(event).is_err() {
                break;
            }
        })?;

    watch_signals(effects.sender());

    let mut running = effects.run(&mut app);
    let mut next_tick = Instant::now() + TICK;
    while running {
        terminal.draw(|frame| ui::draw(frame, &app))?;
        match events.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(event) => apply(&mut app, event),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Apply everything already waiting before drawing again: a burst of keys or rows costs
        // one frame, not one each.
        while let Ok(event) = events.try_recv() {
            apply(&mut app, event);
        }
        // Ticks keep coming while keys do (a held key must not stop the live refresh).
        if Instant::now() >= next_tick {
            apply(&mut app, Event::Tick);
            next_tick = Instant::now() + TICK;
        }
        running = effects.run(&mut app) && !app.quit;
    }
    terminal.show_cursor()?;
    std::io::stdout().flush()?;
    Ok(())
}
