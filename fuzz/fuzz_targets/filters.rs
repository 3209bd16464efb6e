//! Filter values come from users (CLI flags, the TUI's filter bar, the query API): parsing them
//! must never panic, and every value must end up a bound parameter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztk::audit::filter::{parse_duration_us, parse_time_us, Filter, StatusMatch};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_duration_us(&text);
    let _ = parse_time_us(&text);
    let status = StatusMatch::parse(&text);
    let filter = Filter {
        users: vec![text.to_string()],
        resources: vec![text.to_string()],
        statuses: status.into_iter().collect(),
        commands: vec![text.to_string()],
        ..Default::default()
    };
    // Every value is a bound parameter: one placeholder per parameter, and no user text in the SQL.
    for (sql, params) in [filter.call_clause(), filter.command_clause()] {
        assert_eq!(sql.matches('?').count(), params.len(), "{sql}");
    }
});
