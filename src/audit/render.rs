//! Printing audit records for people (tables) and programs (JSON).

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};

use super::model::{format_time_us, CallRow};

/// Human form of a duration in microseconds: `850µs`, `12.3ms`, `1.20s`.
pub fn format_duration_us(us: i64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1e3)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// The calls as a table with the columns administrators filter on.
pub fn calls_table(rows: &[CallRow]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(vec![
            "Date",
            "User",
            "Cluster",
            "Namespace",
            "Resource",
            "Verb",
            "Access Method",
            "Status",
            "Duration",
            "Command",
        ]);
    for row in rows {
        let c = &row.call;
        let mut date = format_time_us(c.time_us);
        date.truncate(19);
        let resource = if c.name.is_empty() {
            c.resource_label()
        } else {
            format!("{}/{}", c.resource_label(), c.name)
        };
        table.add_row(vec![
            date.replace('T', " "),
            c.user.clone(),
            c.cluster.clone(),
            c.namespace.clone(),
            resource,
            c.verb.clone(),
            c.access_method.as_str().to_string(),
            if c.status == 0 {
                "-".to_string()
            } else {
                c.status.to_string()
            },
            format_duration_us(c.duration_us),
            row.command_line
                .clone()
                .unwrap_or_else(|| c.kubectl_command.clone()),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration_us(850), "850µs");
        assert_eq!(format_duration_us(12_345), "12.3ms");
        assert_eq!(format_duration_us(1_204_000), "1.20s");
    }
}
