//! Draws the app state; nothing here changes it.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use std::borrow::Cow;

use crate::audit::format::{format_duration_us, printable};
use crate::audit::model::format_time_us;
use crate::protocol::View;

use super::app::{App, Level, ListScreen, Mode, Screen, KEYS};
use super::columns::{columns, Col, Width};
use super::source::Record;

/// Colours, or none at all when `NO_COLOR` asks (selection and errors then use reverse and bold).
struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, color: Color) -> Style {
        if self.color {
            Style::default().fg(color)
        } else {
            Style::default()
        }
    }

    fn bar(&self) -> Style {
        if self.color {
            Style::default().fg(Color::Black).bg(Color::Cyan)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }

    fn header(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    fn selected(&self) -> Style {
        if self.color {
            Style::default()
                .bg(Color::DarkGray)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }

    fn error(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    fn warning(&self) -> Style {
        self.fg(Color::LightRed).add_modifier(Modifier::BOLD)
    }

    /// By status class: 2xx green, 3xx cyan, 4xx yellow, 5xx and failed connections red.
    fn status(&self, status: u16) -> Style {
        match status / 100 {
            2 => self.fg(Color::Green),
            3 => self.fg(Color::Cyan),
            4 => self.fg(Color::Yellow),
            _ => self.fg(Color::Red),
        }
    }

    /// Deletes and exec-like calls (exec, attach, port-forward) stand out.
    fn verb(&self, verb: &str, subresource: &str) -> Style {
        if is_warning(verb, subresource) {
            self.warning()
        } else {
            Style::default()
        }
    }
}

fn is_warning(verb: &str, subresource: &str) -> bool {
    verb.starts_with("delete") || matches!(subresource, "exec" | "attach" | "portforward")
}

/// The kubectl subcommand of a command line (`kubectl -n x delete pod` → `delete`).
fn command_verb(argv: &[String]) -> &str {
    let mut args = argv.iter().skip(1);
    while let Some(a) = args.next() {
        if a.starts_with('-') {
            // `-n x` / `--namespace x`; `--namespace=x` carries its value.
            if !a.contains('=')
                && matches!(
                    a.as_str(),
                    "-n" | "--namespace"
                        | "--context"
                        | "--kubeconfig"
                        | "-l"
                        | "--selector"
                        | "-o"
                        | "--output"
                )
            {
                args.next();
            }
            continue;
        }
        return a;
    }
    ""
}

pub fn draw(frame: &mut Frame, app: &App) {
    let theme = Theme { color: app.color };
    let area = frame.area();
    let [title, filter, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(frame, app, &theme, title);
    draw_filter(frame, app, &theme, filter);
    match app.screen() {
        Screen::List(list) => draw_table(frame, app, list, &theme, body),
        Screen::Detail { record, scroll } => draw_detail(frame, record, *scroll, &theme, body),
    }
    draw_status(frame, app, &theme, status);
    if app.mode == Mode::Help {
        draw_help(frame, &theme, area);
    }
}

fn draw_title(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let mut parts = vec![format!("ztk audit · {}", app.source_label)];
    match app.screen() {
        Screen::List(list) => {
            let what = match (&list.within, list.view) {
                (Some((_, line)), _) => format!("calls of `{}`", printable(line)),
                (None, View::Commands) => "commands".to_string(),
                (None, View::Calls) => "API calls".to_string(),
            };
            parts.push(what);
            let more = if list.exhausted { "" } else { "+" };
            parts.push(format!("{}{more} rows", list.len()));
            if list.loading {
                parts.push("loading…".into());
            }
            parts.push(match list.anchor {
                Some(t) => format!("at {}", &format_time_us(t)[..19]),
                None => "live".into(),
            });
        }
        Screen::Detail { .. } => parts.push("API call".into()),
    }
    let text = format!(" {}", parts.join(" │ "));
    frame.render_widget(Paragraph::new(text).style(theme.bar()), area);
}

fn draw_filter(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let line = match &app.mode {
        Mode::Filter { input, error } => {
            let label = Span::styled("filter> ", theme.header());
            let style = if error.is_some() {
                theme.error()
            } else {
                Style::default()
            };
            let prefix = 8u16;
            let cursor_x = area.x
                + prefix
                + input.text[..char_byte(&input.text, input.cursor)]
                    .chars()
                    .count() as u16;
            frame.set_cursor_position((cursor_x.min(area.right().saturating_sub(1)), area.y));
            Line::from(vec![label, Span::styled(input.text.clone(), style)])
        }
        _ => {
            let query = app.list().map(|l| l.query.as_str()).unwrap_or("");
            let shown = if query.is_empty() {
                Span::styled("(none: / to filter)", theme.fg(Color::DarkGray))
            } else {
                Span::raw(printable(query).into_owned())
            };
            Line::from(vec![Span::styled("filter: ", theme.header()), shown])
        }
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn char_byte(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i)
}

fn draw_status(frame: &mut Frame, app: &App, theme: &Theme, area: Rect) {
    let prompt = |label: &str, input: &super::app::Input, error: &Option<String>| {
        let mut spans = vec![
            Span::styled(label.to_string(), theme.header()),
            Span::raw(input.text.clone()),
        ];
        if let Some(e) = error {
            spans.push(Span::styled(format!("  {e}"), theme.error()));
        }
        let x = area.x
            + label.chars().count() as u16
            + input.text[..char_byte(&input.text, input.cursor)]
                .chars()
                .count() as u16;
        (Line::from(spans), Some(x))
    };
    let (line, cursor) = match &app.mode {
        Mode::Jump { input, error } => prompt("jump to time> ", input, error),
        Mode::Export { input, error } => prompt("export CSV to> ", input, error),
        Mode::Filter {
            error: Some(error), ..
        } => (Line::styled(error.clone(), theme.error()), None),
        Mode::Filter { .. } => (
            Line::styled(
                "Enter apply · Esc cancel · user: cluster: ns: resource: verb: status: method: cmd: since: until: min: id:",
                theme.fg(Color::DarkGray),
            ),
            None,
        ),
        _ => match &app.status {
            // Messages may quote a record or a gateway's answer.
            Some((text, Level::Error)) => (
                Line::styled(printable(text).into_owned(), theme.error()),
                None,
            ),
            Some((text, Level::Info)) => (Line::raw(printable(text).into_owned()), None),
            None => {
                let hints = match app.screen() {
                    Screen::List(_) => "? help  / filter  Enter open  Tab view  s sort  t time  y copy  e export  q quit",
                    Screen::Detail { .. } => "Esc back · ↑↓ scroll · y copy · q quit",
                };
                (Line::styled(hints, theme.fg(Color::DarkGray)), None)
            }
        },
    };
    frame.render_widget(Paragraph::new(line), area);
    if let Some(x) = cursor {
        frame.set_cursor_position((x.min(area.right().saturating_sub(1)), area.y));
    }
}

fn draw_table(frame: &mut Frame, app: &App, list: &ListScreen, theme: &Theme, area: Rect) {
    let cols: Vec<Col> = columns(list.view)
        .iter()
        .copied()
        .filter(|c| app.width >= c.min_terminal_width(list.view))
        .collect();
    let sorted = app.sorted_column();
    let header = Row::new(cols.iter().map(|c| {
        let arrow = match sorted {
            Some((s, true)) if s == *c => "▲",
            Some((s, false)) if s == *c => "▼",
            _ => "",
        };
        Cell::from(format!("{}{arrow}", c.title()))
    }))
    .style(theme.header());
    let widths: Vec<Constraint> = cols
        .iter()
        .map(|c| match c.width(list.view) {
            Width::Fixed(n) => Constraint::Length(n),
            Width::Fill(n) => Constraint::Fill(n),
        })
        .collect();
    let visible = (area.height as usize).saturating_sub(1);
    // Only the rows on screen are built: the cost of a frame does not grow with the rows loaded.
    let rows: Vec<Row> = (list.offset..list.offset + visible)
        .filter_map(|i| list.row(i).map(|r| (i, r)))
        .map(|(i, record)| {
            let row = Row::new(cols.iter().map(|c| cell(record, *c, theme)));
            if i == list.selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let empty = rows.is_empty();
    frame.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        area,
    );
    if empty && area.height > 2 {
        let (text, style) = match &list.failed {
            Some(message) => (printable(message), theme.error()),
            None if list.loading || !list.loaded => ("loading…".into(), theme.fg(Color::DarkGray)),
            None => (
                "no records match the filter".into(),
                theme.fg(Color::DarkGray),
            ),
        };
        let inner = Rect {
            y: area.y + 2,
            height: area.height - 2,
            ..area
        };
        frame.render_widget(
            Paragraph::new(text)
                .style(style)
                .centered()
                .wrap(Wrap { trim: true }),
            inner,
        );
    }
}

fn cell(record: &Record, col: Col, theme: &Theme) -> Cell<'static> {
    let text = col.text(record);
    let style = match (record, col) {
        (Record::Call(c), Col::Status) => theme.status(c.call.status),
        (Record::Call(c), Col::Verb | Col::Resource) => {
            theme.verb(&c.call.verb, &c.call.subresource)
        }
        (Record::Command(c), Col::Command) => {
            let verb = command_verb(&c.command.argv);
            if verb == "delete" || verb == "exec" || verb == "attach" || verb == "port-forward" {
                theme.warning()
            } else {
                Style::default()
            }
        }
        (Record::Command(c), Col::Statuses) => {
            let worst = ["5xx", "err", "4xx", "3xx", "2xx"]
                .into_iter()
                .find(|k| c.statuses.contains_key(*k));
            match worst {
                Some("5xx") | Some("err") => theme.status(500),
                Some("4xx") => theme.status(400),
                Some("3xx") => theme.status(300),
                Some(_) => theme.status(200),
                None => Style::default(),
            }
        }
        (Record::Command(c), Col::Exit) => match c.command.exit_code {
            None if c.command.refused() => theme.status(400),
            Some(0) | None => Style::default(),
            Some(_) => theme.status(500),
        },
        _ => Style::default(),
    };
    Cell::from(printable(&text).into_owned()).style(style)
}

/// Every field of a record, one per line, escaped for the terminal (`printable`).
pub fn detail_lines(record: &Record) -> Vec<(&'static str, String)> {
    let mut lines = raw_detail_lines(record);
    for (_, value) in &mut lines {
        if let Cow::Owned(escaped) = printable(value) {
            *value = escaped;
        }
    }
    lines
}

fn raw_detail_lines(record: &Record) -> Vec<(&'static str, String)> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let dur = |us: i64| format!("{} ({us} µs)", format_duration_us(us));
    match record {
        Record::Call(row) => {
            let c = &row.call;
            vec![
                ("time", format_time_us(c.time_us)),
                ("user", c.user.clone()),
                ("cluster", c.cluster.clone()),
                ("verb", c.verb.clone()),
                ("method", c.method.clone()),
                ("path", c.path.clone()),
                ("query", c.query.clone()),
                ("namespace", c.namespace.clone()),
                ("resource", c.resource.clone()),
                ("subresource", c.subresource.clone()),
                ("name", c.name.clone()),
                ("api group", c.api_group.clone()),
                ("api version", c.api_version.clone()),
                ("status", c.status.to_string()),
                ("decision", c.decision.clone()),
                ("reason", c.reason.clone()),
                ("duration", dur(c.duration_us)),
                ("client duration", opt(row.client_duration_us.map(dur))),
                ("gateway duration", opt(row.gateway_duration_us.map(dur))),
                ("bytes in", c.bytes_in.to_string()),
                ("bytes out", c.bytes_out.to_string()),
                ("user agent", c.user_agent.clone()),
                ("source ip", c.source_ip.clone()),
                ("access method", c.access_method.as_str().to_string()),
                ("kubectl command", c.kubectl_command.clone()),
                ("kubectl session", c.kubectl_session.clone()),
                ("command line", opt(row.command_line.clone())),
                ("command id", opt(c.command_id.map(|i| i.to_string()))),
                ("request id", opt(c.request_id.map(|i| i.to_string()))),
                ("id", c.id.to_string()),
            ]
        }
        Record::Command(row) => {
            let c = &row.command;
            vec![
                ("started", format_time_us(c.started_us)),
                ("ended", opt(c.ended_us.map(format_time_us))),
                ("user", c.user.clone()),
                ("cluster", c.cluster.clone()),
                ("command line", c.command_line.clone()),
                ("exit code", opt(c.exit_code.map(|e| e.to_string()))),
                ("calls", row.calls.to_string()),
                ("statuses", row.status_summary()),
                ("duration", opt(row.duration_us.map(dur))),
                ("access method", c.access_method.as_str().to_string()),
                ("cwd", c.cwd.clone()),
                ("host", c.host.clone()),
                ("reason", c.reason.clone()),
                ("id", c.id.to_string()),
            ]
        }
    }
}

fn draw_detail(frame: &mut Frame, record: &Record, scroll: u16, theme: &Theme, area: Rect) {
    let fields = detail_lines(record);
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let lines: Vec<Line> = fields
        .into_iter()
        .map(|(k, v)| {
            let style = match (record, k) {
                (Record::Call(c), "status") => theme.status(c.call.status),
                (Record::Call(c), "verb") => theme.verb(&c.call.verb, &c.call.subresource),
                _ => Style::default(),
            };
            Line::from(vec![
                Span::styled(format!("{k:>width$}  "), theme.header()),
                Span::styled(v, style),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::TOP).title(" Esc: back "))
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0)),
        area,
    );
}

fn draw_help(frame: &mut Frame, theme: &Theme, area: Rect) {
    let width = area.width.min(100);
    let height = (KEYS.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let key_width = KEYS
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, d)| {
            Line::from(vec![
                Span::styled(format!("{k:<key_width$}  "), theme.header()),
                Span::raw(*d),
            ])
        })
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" keys (Esc or ? closes) "),
        ),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::KeyCode;
    use ratatui::Terminal;

    use super::*;
    use crate::tui::app::tests::{key, loaded};

    fn render(app: &mut App, width: u16, height: u16) -> (Vec<String>, ratatui::buffer::Buffer) {
        app.resize(width, height);
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let lines = (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect();
        (lines, buffer)
    }

    fn assert_screen(lines: &[String], want: &str) {
        let want: Vec<&str> = want.lines().map(|l| l.trim_end()).collect();
        let got: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!(got, want, "\n--- got ---\n{}\n", lines.join("\n"));
    }

    #[test]
    fn commands_at_80x24() {
        let mut app = loaded(View::Commands, 30, false);
        app.key(key(KeyCode::Down));
        let (lines, buffer) = render(&mut app, 80, 24);
        assert_screen(
            &lines,
            " ztk audit · local test.db │ commands │ 30 rows │ live
filter: (none: / to filter)
TIME (UTC)     USER     COMMAND                       STATUSES          TOOK
11-29 12:00:00 alice    kubectl delete pods #0        2xx:1 4xx:1       250.0ms
11-29 11:59:00 bob      kubectl get pods #1           2xx:1 4xx:1       250.0ms
11-29 11:58:00 alice    kubectl get pods #2           2xx:1 4xx:1       250.0ms
11-29 11:57:00 bob      kubectl get pods #3           2xx:1 4xx:1       250.0ms
11-29 11:56:00 alice    kubectl get pods #4           2xx:1 4xx:1       250.0ms
11-29 11:55:00 bob      kubectl delete pods #5        2xx:1 4xx:1       250.0ms
11-29 11:54:00 alice    kubectl get pods #6           2xx:1 4xx:1       250.0ms
11-29 11:53:00 bob      kubectl get pods #7           2xx:1 4xx:1       250.0ms
11-29 11:52:00 alice    kubectl get pods #8           2xx:1 4xx:1       250.0ms
11-29 11:51:00 bob      kubectl get pods #9           2xx:1 4xx:1       250.0ms
11-29 11:50:00 alice    kubectl delete pods #10       2xx:1 4xx:1       250.0ms
11-29 11:49:00 bob      kubectl get pods #11          2xx:1 4xx:1       250.0ms
11-29 11:48:00 alice    kubectl get pods #12          2xx:1 4xx:1       250.0ms
11-29 11:47:00 bob      kubectl get pods #13          2xx:1 4xx:1       250.0ms
11-29 11:46:00 alice    kubectl get pods #14          2xx:1 4xx:1       250.0ms
11-29 11:45:00 bob      kubectl delete pods #15       2xx:1 4xx:1       250.0ms
11-29 11:44:00 alice    kubectl get pods #16          2xx:1 4xx:1       250.0ms
11-29 11:43:00 bob      kubectl get pods #17          2xx:1 4xx:1       250.0ms
11-29 11:42:00 alice    kubectl get pods #18          2xx:1 4xx:1       250.0ms
11-29 11:41:00 bob      kubectl get pods #19          2xx:1 4xx:1       250.0ms
? help  / filter  Enter open  Tab view  s sort  t time  y copy  e export  q quit",
        );
        // Colours: delete commands warn, a 4xx among the calls is yellow, the selection stands out.
        assert_eq!(buffer[(24, 3)].fg, Color::LightRed);
        assert_eq!(buffer[(24, 4)].fg, Color::Reset);
        assert_eq!(buffer[(54, 4)].fg, Color::Yellow);
        assert_eq!(buffer[(0, 4)].bg, Color::DarkGray);
        assert_eq!(buffer[(0, 3)].bg, Color::Reset);
    }

    #[test]
    fn calls_in_a_large_terminal_show_every_column() {
        let mut app = loaded(View::Calls, 30, false);
        app.key(key(KeyCode::Char('s')));
        app.key(key(KeyCode::Char('S')));
        let (lines, buffer) = render(&mut app, 160, 12);
        assert_screen(
            &lines,
            " ztk audit · local test.db │ API calls │ 30 rows │ live
filter: (none: / to filter)
TIME (UTC)▼    USER     CLUSTER  VERB    RESOURCE       NAMESPACE   NAME                                    CODE TOOK     COMMAND
11-29 12:00:00 alice    prod     get     pods           payments    web-0                                   200  1.5ms    kubectl get pods
11-29 11:59:59 alice    prod     list    pods           payments    web-1                                   404  1.5ms    kubectl get pods
11-29 11:59:58 alice    prod     delete  pods           payments    web-2                                   500  1.5ms    kubectl get pods
11-29 11:59:57 alice    prod     create  pods           payments    web-3                                   201  1.5ms    kubectl get pods
11-29 11:59:56 alice    prod     get     pods           payments    web-4                                   200  1.5ms    kubectl get pods
11-29 11:59:55 alice    prod     list    pods           payments    web-5                                   404  1.5ms    kubectl get pods
11-29 11:59:54 alice    prod     delete  pods           payments    web-6                                   500  1.5ms    kubectl get pods
11-29 11:59:53 alice    prod     create  pods           payments    web-7                                   201  1.5ms    kubectl get pods
sorted by TIME (UTC) (the 30 loaded rows)",
        );
        let code_x = 108;
        assert_eq!(buffer[(code_x, 3)].fg, Color::Green);
        assert_eq!(buffer[(code_x, 4)].fg, Color::Yellow);
        assert_eq!(buffer[(code_x, 5)].fg, Color::Red);
        assert_eq!(buffer[(33, 5)].fg, Color::LightRed, "delete verb warns");
        assert_eq!(buffer[(33, 6)].fg, Color::Reset);
    }

    #[test]
    fn no_color_draws_without_colours() {
        let mut app = loaded(View::Calls, 30, false);
        app.color = false;
        let (_, buffer) = render(&mut app, 120, 30);
        for cell in buffer.content() {
            assert_eq!((cell.fg, cell.bg), (Color::Reset, Color::Reset), "{cell:?}");
        }
        // The selection is still visible, in reverse video.
        assert!(buffer[(0, 3)].modifier.contains(Modifier::REVERSED));
    }

    #[test]
    fn detail_pane_help_and_prompts_at_80x24() {
        let mut app = loaded(View::Calls, 5, false);
        app.key(key(KeyCode::Enter));
        let (lines, _) = render(&mut app, 80, 24);
        assert_eq!(lines[0], " ztk audit · local test.db │ API call");
        assert_eq!(lines[4], "            user  alice");
        assert_eq!(lines[20], " client duration  1.5ms (1500 µs)");
        // Scrolling reaches every field, down to the ids.
        for _ in 0..12 {
            app.key(key(KeyCode::Down));
        }
        let (lines, _) = render(&mut app, 80, 24);
        let text = lines.join("\n");
        for field in [
            "bytes out  100",
            "user agent  kubectl/v1.33.0",
            "kubectl session  sess-1",
            "request id  01900000-0000-7000-8000-0000000003e8",
        ] {
            assert!(text.contains(field), "{field}\n{text}");
        }

        app.key(key(KeyCode::Char('?')));
        let (lines, _) = render(&mut app, 80, 24);
        let text = lines.join("\n");
        for (k, d) in KEYS {
            assert!(
                text.contains(k) && text.contains(d),
                "help lacks {k} {d}\n{text}"
            );
        }
        app.key(key(KeyCode::Esc));
        app.key(key(KeyCode::Esc));

        app.key(key(KeyCode::Char('/')));
        for c in "status:9xx".chars() {
            app.key(key(KeyCode::Char(c)));
        }
        app.key(key(KeyCode::Enter));
        let (lines, _) = render(&mut app, 80, 24);
        assert_eq!(lines[1], "filter> status:9xx");
        assert_eq!(
            lines[23],
            "invalid status \"9xx\": use an HTTP code (404) or a class (2xx, 4xx, 5xx)"
        );
        app.key(key(KeyCode::Esc));
        app.key(key(KeyCode::Char('t')));
        for c in "soon".chars() {
            app.key(key(KeyCode::Char(c)));
        }
        app.key(key(KeyCode::Enter));
        let (lines, _) = render(&mut app, 80, 24);
        assert!(
            lines[23].starts_with("jump to time> soon  invalid time \"soon\""),
            "{}",
            lines[23]
        );
    }

    #[test]
    fn empty_and_loading_listings_say_so() {
        let mut app = loaded(View::Calls, 0, false);
        let (lines, _) = render(&mut app, 80, 24);
        assert_eq!(lines[4].trim(), "no records match the filter");
        let mut app =
            App::new(crate::tui::source::SourceKind::Local, View::Calls, "user:x").unwrap();
        let (lines, _) = render(&mut app, 80, 24);
        assert_eq!(lines[1], "filter: user:x");
        assert!(lines[0].contains("loading…"));
        assert_eq!(lines[4].trim(), "loading…");
        let gen = app.list().unwrap().gen;
        app.data(crate::tui::source::Response::Failed {
            screen: gen,
            kind: crate::tui::source::FetchKind::Reset,
            message: "no gateway session: not logged in (run `ztk login`)".into(),
        });
        let (lines, _) = render(&mut app, 80, 24);
        assert_eq!(
            lines[4].trim(),
            "no gateway session: not logged in (run `ztk login`)"
        );
    }

    #[test]
    fn control_characters_in_records_are_drawn_escaped() {
        use crate::tui::app::tests::{call, command, loaded_with};
        let hostile = "kubectl get \x1b[2J\x1b]52;c;aGVsbG8=\x07 \u{202e}x";
        let escaped = r"kubectl get \x1b[2J\x1b]52;c;aGVsbG8=\x07 \u{202e}x";
        let Record::Call(mut row) = call(0) else {
            unreachable!()
        };
        row.command_line = Some(hostile.into());
        row.call.name = "web\u{9b}0".into();
        row.call.user_agent = "ua\x1b[31m".into();
        let mut app = loaded_with(View::Calls, vec![Record::Call(row)], false);
        let (lines, buffer) = render(&mut app, 200, 12);
        let text = lines.join("\n");
        assert!(text.contains(escaped), "{text}");
        assert!(text.contains(r"web\u{9b}0"), "{text}");
        let raw = |b: &ratatui::buffer::Buffer| {
            b.content().iter().any(|c| {
                c.symbol()
                    .chars()
                    .any(|ch| ch.is_control() || ch == '\u{202e}')
            })
        };
        assert!(!raw(&buffer), "a raw control character reached the screen");
        // The detail pane.
        app.key(key(KeyCode::Enter));
        let (lines, buffer) = render(&mut app, 200, 40);
        let text = lines.join("\n");
        assert!(text.contains(&format!("command line  {escaped}")), "{text}");
        assert!(text.contains(r"user agent  ua\x1b[31m"), "{text}");
        assert!(!raw(&buffer));

        let Record::Command(mut row) = command(0) else {
            unreachable!()
        };
        row.command.command_line = hostile.into();
        row.command.cwd = "/tmp/\x1b]0;title\x07".into();
        let mut app = loaded_with(View::Commands, vec![Record::Command(row)], false);
        let (lines, buffer) = render(&mut app, 120, 12);
        assert!(
            lines.join("\n").contains(r"kubectl get \x1b[2J\x1b]52;c"),
            "{lines:?}"
        );
        assert!(!raw(&buffer));
        app.key(key(KeyCode::Enter));
        let (lines, buffer) = render(&mut app, 120, 40);
        let text = lines.join("\n");
        assert!(text.contains(r"calls of `kubectl get \x1b[2J"), "{text}");
        assert!(!raw(&buffer));
    }

    #[test]
    fn a_refused_command_says_so_with_its_reason_escaped() {
        use crate::tui::app::tests::{command, loaded_with};
        let Record::Command(mut row) = command(0) else {
            unreachable!()
        };
        row.command.exit_code = None;
        row.command.ended_us = None;
        row.duration_us = None;
        row.command.reason = "refused: not in the web shell\x1b[8m".into();
        let record = Record::Command(row);
        let details = detail_lines(&record);
        assert!(
            details.contains(&("reason", r"refused: not in the web shell\x1b[8m".into())),
            "{details:?}"
        );
        let mut app = loaded_with(View::Commands, vec![record], false);
        let (lines, buffer) = render(&mut app, 160, 12);
        let text = lines.join("\n");
        let row = lines.iter().find(|l| l.contains("kubectl")).unwrap();
        assert!(
            row.ends_with(" -        refused") && !text.contains("running"),
            "{text}"
        );
        assert!(!buffer.content().iter().any(|c| c.symbol().contains('\x1b')));
    }

    #[test]
    fn tiny_terminals_never_panic() {
        for (w, h) in [(1, 1), (10, 3), (20, 5), (40, 8)] {
            let mut app = loaded(View::Commands, 30, false);
            render(&mut app, w, h);
            app.key(key(KeyCode::Enter));
            render(&mut app, w, h);
            app.key(key(KeyCode::Char('/')));
            render(&mut app, w, h);
            app.key(key(KeyCode::Esc));
            app.key(key(KeyCode::Char('?')));
            render(&mut app, w, h);
            let mut app = loaded(View::Calls, 3, false);
            app.key(key(KeyCode::Enter));
            render(&mut app, w, h);
        }
    }

    #[test]
    fn the_kubectl_verb_of_a_command_line() {
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            command_verb(&argv("kubectl -n prod delete pod x")),
            "delete"
        );
        assert_eq!(
            command_verb(&argv("kubectl --context=a exec -it p -- sh")),
            "exec"
        );
        assert_eq!(command_verb(&argv("kubectl")), "");
    }
}
