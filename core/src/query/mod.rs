//! The IoT Hub query language (spec §6): `SELECT ... FROM devices WHERE ... GROUP BY ...`.
//!
//! - [`parse`] turns text into a [`Query`] or a [`QueryError`] that points at line and column;
//! - [`eval`] runs a query against one JSON document in memory;
//! - [`sql`] compiles it to SQLite SQL over the fleet index, with the same results;
//! - [`aggregate`] merges partial aggregates from many shards into result rows;
//! - [`page`] is paging: page sizes and continuation tokens.

pub mod aggregate;
pub mod ast;
mod error;
pub mod eval;
mod lexer;
pub mod page;
mod parser;
pub mod sql;

pub use ast::{Collection, Query, Select};
pub use error::{Position, QueryError};
pub use parser::{parse, MAX_BOUND_VALUES, MAX_HEIGHT, MAX_NESTING, MAX_QUERY_CHARS, MAX_TOP};

/// What a query's rows are, as the `x-ms-item-type` header names it (spec §6.7): whole twins,
/// job records, or anything else.
pub fn item_type(query: &Query) -> &'static str {
    match (query.from, &query.select) {
        (Collection::Jobs, Select::Star) => "DeviceJob",
        (_, Select::Star) => "Twin",
        _ => "Raw",
    }
}

#[cfg(test)]
mod tests;
