//! A query that cannot run, and where in its text the problem is.

use crate::{ErrorCode, HubError};
use std::fmt;

/// A place in the query text: 1-based line and column, counted in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Why a query was refused. Shown to the operator as `"<message> at <line>:<col>"`; the
/// dashboard puts it under the query box and can place a caret with `at`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at {at}")]
pub struct QueryError {
    pub at: Position,
    pub message: String,
}

impl QueryError {
    pub(crate) fn new(at: Position, message: impl Into<String>) -> Self {
        Self { at, message: message.into() }
    }
}

impl From<QueryError> for HubError {
    fn from(e: QueryError) -> Self {
        HubError::new(ErrorCode::ArgumentInvalid, format!("The query is invalid: {e}"))
    }
}
