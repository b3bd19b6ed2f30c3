//! Query text, arbitrary: parse, evaluate, compile and page without panicking or overflowing
//! the stack.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use twinhub_core::query::{aggregate, eval, page::Continuation, parse, sql, Select};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Continuation::from_header(Some(&text), "SELECT * FROM devices");
    let Ok(query) = parse(&text) else { return };
    let doc = json!({
        "deviceId": "d1",
        "version": 3,
        "tags": { "a": { "b": [1, 2] }, "s": "x", "n": null, "t": true },
        "properties": { "desired": { "v": 1.5 }, "reported": { "v": "1.5" } }
    });
    let _ = eval::matches(query.filter.as_ref(), &doc);
    if let Select::Items(items) = &query.select {
        let _ = eval::project(items, &doc);
    }
    let mut groups = aggregate::Groups::default();
    aggregate::accumulate(&query, &doc, &mut groups);
    let _ = aggregate::rows(&query, groups.into_vec());
    let _ = sql::rows_statement(&query, Some("d0"), 101);
    let _ = sql::aggregate_statement(&query);
});
