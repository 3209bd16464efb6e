//! `ztk audit tui --bench` (hidden): times the first screen and key presses through the real
//! app, worker and renderer, drawing into a `TestBackend` instead of a terminal. A key counts
//! as answered when every query it caused has been applied and the next frame is drawn.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

use crate::audit::AuditStore;
use crate::protocol::View;

use super::app::App;
use super::source::{LocalSource, Source, SourceError, SourceKind, Sources};
use super::{apply, ui, Effects, Event};

const WIDTH: u16 = 120;
const HEIGHT: u16 = 40;

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

struct Harness {
    app: App,
    effects: Effects,
    events: Receiver<Event>,
    terminal: Terminal<TestBackend>,
}

impl Harness {
    /// Runs effects and applies answers until no query of the app is outstanding, then draws.
    fn settle(&mut self) -> Result<()> {
        self.effects.run(&mut self.app);
        while self.app.busy() {
            match self.events.recv_timeout(Duration::from_secs(30)) {
                Ok(event) => apply(&mut self.app, event),
                Err(_) => bail!("a query did not answer within 30 s"),
            }
            self.effects.run(&mut self.app);
        }
        self.terminal.draw(|f| ui::draw(f, &self.app))?;
        Ok(())
    }

    /// Presses a key: the time to the next frame (the key's own answer, queries merely asked
    /// for) and the time until the data it asked for is applied and drawn.
    fn press(&mut self, code: KeyCode) -> Result<(Duration, Duration)> {
        let started = Instant::now();
        self.app.key(key(code));
        self.effects.run(&mut self.app);
        self.terminal.draw(|f| ui::draw(f, &self.app))?;
        let frame = started.elapsed();
        self.settle()?;
        Ok((frame, started.elapsed()))
    }

    fn type_text(&mut self, text: &str) {
        for c in text.chars() {
            self.app.key(key(KeyCode::Char(c)));
        }
    }
}

fn start(store: &AuditStore, view: View, query: &str) -> Result<(Harness, Duration)> {
    let started = Instant::now();
    let local = store.clone();
    let sources = Sources::new(
        std::sync::Arc::new(move || {
            Ok(Box::new(LocalSource::new(local.clone())) as Box<dyn Source>)
        }),
        std::sync::Arc::new(|| {
            Err(SourceError::NoSession(
                "the benchmark reads the local store".into(),
            ))
        }),
    );
    let (effects, events) = Effects::start(sources, false);
    let mut app = App::new(SourceKind::Local, view, query)?;
    app.resize(WIDTH, HEIGHT);
    let mut h = Harness {
        app,
        effects,
        events,
        terminal: Terminal::new(TestBackend::new(WIDTH, HEIGHT))?,
    };
    h.settle()?;
    let took = started.elapsed();
    if h.app.list().is_none_or(|l| l.is_empty()) {
        bail!("the store has no records: seed it first (`ztk audit seed --count N`)");
    }
    Ok((h, took))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn stats(mut samples: Vec<Duration>) -> (usize, f64, f64, f64) {
    samples.sort();
    let n = samples.len();
    let pick = |q: f64| ms(samples[((n as f64 * q).ceil() as usize).clamp(1, n) - 1]);
    (n, pick(0.5), pick(0.95), ms(samples[n - 1]))
}

fn report(name: &str, samples: Vec<Duration>) {
    let (n, median, p95, max) = stats(samples);
    println!("{name:<40} n={n:<4} median {median:>7.2} ms  p95 {p95:>7.2} ms  max {max:>7.2} ms");
}

/// A key's two numbers: to its next frame, and until the rows it asked for are on screen.
fn report_keys(name: &str, samples: Vec<(Duration, Duration)>) {
    let (n, median, p95, max) = stats(samples.iter().map(|s| s.0).collect());
    let (_, d_median, d_p95, d_max) = stats(samples.iter().map(|s| s.1).collect());
    println!(
        "{name:<40} n={n:<4} frame: median {median:>6.2} p95 {p95:>6.2} max {max:>6.2} ms │ with data: median {d_median:>7.2} p95 {d_p95:>7.2} max {d_max:>7.2} ms"
    );
}

pub fn run(store: AuditStore, view: View, query: &str) -> Result<()> {
    println!(
        "ztk audit tui --bench: {} ({}×{} TestBackend)",
        store.path().display(),
        WIDTH,
        HEIGHT
    );
    for v in [View::Commands, View::Calls] {
        let mut firsts = Vec::new();
        for _ in 0..5 {
            firsts.push(start(&store, v, query)?.1);
        }
        report(&format!("first screen, {v:?} view"), firsts);
    }

    let (mut h, _) = start(&store, view, query)?;
    let mut down = Vec::new();
    for _ in 0..300 {
        down.push(h.press(KeyCode::Down)?);
    }
    report_keys("↓ (move one row)", down);

    let mut pages = Vec::new();
    for _ in 0..150 {
        pages.push(h.press(KeyCode::PageDown)?);
    }
    report_keys("PgDn (pages load as needed)", pages);
    println!(
        "    rows loaded after {} PgDn: {}",
        150,
        h.app.list().map_or(0, |l| l.len())
    );

    let mut ends = Vec::new();
    for _ in 0..10 {
        ends.push(h.press(KeyCode::End)?);
    }
    report_keys("End (last loaded row, loads the next)", ends);

    let mut sorts = Vec::new();
    for _ in 0..12 {
        sorts.push(h.press(KeyCode::Char('s'))?);
    }
    report_keys("s (sort the loaded rows)", sorts);

    let mut homes = Vec::new();
    for _ in 0..10 {
        homes.push(h.press(KeyCode::Home)?);
    }
    report_keys("Home", homes);

    let mut filters = Vec::new();
    for q in [
        "user:alice",
        "verb:delete ns:payments",
        "status:5xx cluster:prod",
        "since:1d resource:secrets",
        "user:bob method:cli",
        "",
    ] {
        h.app.key(key(KeyCode::Char('/')));
        h.app
            .key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
        h.type_text(q);
        filters.push(h.press(KeyCode::Enter)?);
    }
    report_keys("Enter in the filter bar (new query)", filters);

    let mut toggles = Vec::new();
    for _ in 0..6 {
        toggles.push(h.press(KeyCode::Tab)?);
    }
    report_keys("Tab (commands ↔ calls, new query)", toggles);

    if h.app.list().is_some_and(|l| l.view != View::Commands) {
        h.press(KeyCode::Tab)?;
    }
    let (mut opens, mut backs) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        h.press(KeyCode::Down)?;
        opens.push(h.press(KeyCode::Enter)?);
        backs.push(h.press(KeyCode::Esc)?);
    }
    report_keys("Enter on a command (its calls)", opens);
    report_keys("Esc (back)", backs);

    let mut jumps = Vec::new();
    for when in ["1d", "7d", "20d", ""] {
        h.app.key(key(KeyCode::Char('t')));
        h.type_text(when);
        jumps.push(h.press(KeyCode::Enter)?);
    }
    report_keys("t + Enter (jump to a time)", jumps);

    let mut refreshes = Vec::new();
    for _ in 0..8 {
        let started = Instant::now();
        apply(&mut h.app, Event::Tick);
        h.settle()?;
        refreshes.push(started.elapsed());
    }
    report("tick (live refresh check)", refreshes);
    Ok(())
}
