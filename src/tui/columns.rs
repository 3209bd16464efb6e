//! The columns of both views: titles, widths, cell text and sort order, shared by the
//! renderer and the sort key.

use crate::audit::format::format_duration_us;
use crate::audit::model::{format_time_us, REFUSED};
use crate::protocol::View;

use super::source::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Time,
    User,
    Cluster,
    Command,
    Calls,
    Statuses,
    Duration,
    Exit,
    Verb,
    Resource,
    Namespace,
    Name,
    Status,
}

pub const COMMAND_COLS: &[Col] = &[
    Col::Time,
    Col::User,
    Col::Cluster,
    Col::Command,
    Col::Calls,
    Col::Statuses,
    Col::Duration,
    Col::Exit,
];

pub const CALL_COLS: &[Col] = &[
    Col::Time,
    Col::User,
    Col::Cluster,
    Col::Verb,
    Col::Resource,
    Col::Namespace,
    Col::Name,
    Col::Status,
    Col::Duration,
    Col::Command,
];

pub fn columns(view: View) -> &'static [Col] {
    match view {
        View::Commands => COMMAND_COLS,
        View::Calls => CALL_COLS,
    }
}

/// A cell's sort value (computed once per row per sort, not per comparison).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortKey {
    Number(i64),
    Text(String),
}

/// How wide a column is: a fixed width, or a share of what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    Fixed(u16),
    Fill(u16),
}

impl Col {
    pub fn title(self) -> &'static str {
        match self {
            Col::Time => "TIME (UTC)",
            Col::User => "USER",
            Col::Cluster => "CLUSTER",
            Col::Command => "COMMAND",
            Col::Calls => "CALLS",
            Col::Statuses => "STATUSES",
            Col::Duration => "TOOK",
            Col::Exit => "EXIT",
            Col::Verb => "VERB",
            Col::Resource => "RESOURCE",
            Col::Namespace => "NAMESPACE",
            Col::Name => "NAME",
            Col::Status => "CODE",
        }
    }

    pub fn width(self, view: View) -> Width {
        match self {
            Col::Time => Width::Fixed(14),
            Col::User => Width::Fixed(8),
            Col::Cluster => Width::Fixed(8),
            Col::Command if view == View::Commands => Width::Fill(3),
            Col::Command => Width::Fill(2),
            Col::Calls => Width::Fixed(5),
            Col::Statuses => Width::Fixed(17),
            Col::Duration => Width::Fixed(8),
            Col::Exit => Width::Fixed(7),
            Col::Verb => Width::Fixed(7),
            Col::Resource => Width::Fixed(14),
            Col::Namespace => Width::Fixed(11),
            Col::Name => Width::Fill(2),
            Col::Status => Width::Fixed(4),
        }
    }

    /// The narrowest terminal that shows this column: narrow terminals keep the essentials.
    pub fn min_terminal_width(self, view: View) -> u16 {
        match (view, self) {
            (View::Commands, Col::Exit) => 90,
            (View::Commands, Col::Calls) => 96,
            (View::Commands, Col::Cluster) => 100,
            (View::Calls, Col::Namespace) => 96,
            (View::Calls, Col::Cluster) => 110,
            (View::Calls, Col::Command) => 130,
            _ => 0,
        }
    }

    /// The text of this column for a record of its view.
    pub fn text(self, record: &Record) -> String {
        match record {
            Record::Command(row) => {
                let c = &row.command;
                match self {
                    Col::Time => short_time(c.started_us),
                    Col::User => c.user.clone(),
                    Col::Cluster => c.cluster.clone(),
                    Col::Command => c.command_line.clone(),
                    Col::Calls => row.calls.to_string(),
                    Col::Statuses => row.status_summary(),
                    Col::Duration => row
                        .duration_us
                        .map(format_duration_us)
                        .unwrap_or_else(|| if c.refused() { "-" } else { "running" }.into()),
                    Col::Exit => match c.exit_code {
                        Some(e) => e.to_string(),
                        None if c.refused() => REFUSED.into(),
                        None => String::new(),
                    },
                    _ => String::new(),
                }
            }
            Record::Call(row) => {
                let c = &row.call;
                match self {
                    Col::Time => short_time(c.time_us),
                    Col::User => c.user.clone(),
                    Col::Cluster => c.cluster.clone(),
                    Col::Verb => c.verb.clone(),
                    Col::Resource => c.resource_label(),
                    Col::Namespace => c.namespace.clone(),
                    Col::Name => c.name.clone(),
                    Col::Status => match c.status {
                        0 => "err".into(),
                        s => s.to_string(),
                    },
                    Col::Duration => format_duration_us(c.duration_us),
                    Col::Command => match &row.command_line {
                        Some(line) if !line.is_empty() => line.clone(),
                        _ => c.kubectl_command.clone(),
                    },
                    _ => String::new(),
                }
            }
        }
    }

    /// A record's value in this column, to sort by: numbers as numbers, the rest as text.
    pub fn sort_key(self, record: &Record) -> SortKey {
        match self.number(record) {
            Some(n) => SortKey::Number(n),
            None => SortKey::Text(self.text(record)),
        }
    }

    fn number(self, record: &Record) -> Option<i64> {
        match (self, record) {
            (Col::Time, r) => Some(r.time_us()),
            (Col::Calls, Record::Command(c)) => Some(c.calls),
            (Col::Duration, Record::Command(c)) => Some(c.duration_us.unwrap_or(i64::MAX)),
            (Col::Exit, Record::Command(c)) => {
                Some(c.command.exit_code.map_or(i64::MIN, i64::from))
            }
            (Col::Duration, Record::Call(c)) => Some(c.call.duration_us),
            (Col::Status, Record::Call(c)) => Some(c.call.status.into()),
            _ => None,
        }
    }
}

/// `11-24 22:32:18` (UTC): the date and second, enough to tell rows apart in a table.
pub fn short_time(us: i64) -> String {
    let full = format_time_us(us);
    // 2026-11-24T22:32:18.123456Z
    if full.len() >= 19 {
        format!("{} {}", &full[5..10], &full[11..19])
    } else {
        full
    }
}
