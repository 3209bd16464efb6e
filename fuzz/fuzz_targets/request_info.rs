//! The request parser sees every path and query a client sends: it must never panic, and what
//! it returns must be consistent with its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztk::request_info::RequestInfo;

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (&*text, None),
    };
    let info = RequestInfo::parse(METHODS[m as usize % METHODS.len()], path, query);
    if info.is_resource_request {
        assert!(!info.api_version.is_empty(), "a resource request has a version: {path:?}");
        assert!(path.contains(&info.api_version));
    } else {
        assert!(info.resource.is_empty() && info.namespace.is_empty());
    }
    let _ = info.resource_path();
});
