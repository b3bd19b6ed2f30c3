//! Paging (spec §6.7): page size from `x-ms-max-item-count`, and the opaque
//! `x-ms-continuation` token, which works across index shards.
//!
//! Row queries page by key: every page asks each shard for the rows after the last device id
//! returned, so a fleet that does not change is never repeated or skipped, however the shards
//! split it. Aggregate queries page by offset over their (small) list of groups. The token
//! carries a fingerprint of the query text so it cannot be replayed against another query.

use crate::{ErrorCode, HubError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// The default and largest page.
pub const MAX_PAGE: u64 = 100;

/// The page size for an `x-ms-max-item-count` header: 1 to 100; a missing or unusable value
/// means 100 (the service "may use a different value if the value specified is not acceptable").
pub fn page_size(header: Option<&str>) -> u64 {
    match header.and_then(|h| h.trim().parse::<u64>().ok()) {
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        _ => MAX_PAGE,
    }
}

/// Where the next page starts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continuation {
    /// Fingerprint of the query text.
    #[serde(rename = "q")]
    pub query: u32,
    /// Row queries: the last device id returned.
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Rows (or groups) returned so far, for TOP and for aggregate paging.
    #[serde(rename = "n")]
    pub returned: u64,
}

impl Continuation {
    /// The start of a query.
    pub fn start(query_text: &str) -> Self {
        Self { query: fingerprint(query_text), after: None, returned: 0 }
    }

    /// Reads a client's `x-ms-continuation` (absent or empty means the first page).
    pub fn from_header(header: Option<&str>, query_text: &str) -> Result<Self, HubError> {
        let token = match header.map(str::trim) {
            None | Some("") => return Ok(Self::start(query_text)),
            Some(t) => t,
        };
        let invalid =
            |why: &str| HubError::new(ErrorCode::ArgumentInvalid, format!("The continuation token is invalid: {why}"));
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid("it is not one this hub issued"))?;
        let c: Self = serde_json::from_slice(&bytes).map_err(|_| invalid("it is not one this hub issued"))?;
        if c.query != fingerprint(query_text) {
            return Err(invalid("it belongs to a different query"));
        }
        Ok(c)
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// FNV-1a of the query text.
fn fingerprint(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// How many rows this page may hold: the page size, cut by what TOP leaves.
pub fn rows_wanted(top: Option<u64>, page: u64, continuation: &Continuation) -> u64 {
    match top {
        Some(top) => page.min(top.saturating_sub(continuation.returned)),
        None => page,
    }
}

/// Merges shard answers into one page. Each shard was asked for `wanted + 1` rows after the
/// continuation's key, in key order; more rows exist exactly when the shards returned more
/// than `wanted` together. Returns the page and the next continuation, if any.
pub fn merge_rows<T>(
    shards: Vec<Vec<(String, T)>>,
    wanted: u64,
    top: Option<u64>,
    continuation: &Continuation,
) -> (Vec<T>, Option<Continuation>) {
    let mut all: Vec<(String, T)> = shards.into_iter().flatten().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let wanted = usize::try_from(wanted).unwrap_or(usize::MAX);
    let more = all.len() > wanted;
    all.truncate(wanted);
    let returned = continuation.returned + all.len() as u64;
    let top_left = top.is_none_or(|t| returned < t);
    let next = match all.last() {
        Some((last, _)) if more && top_left => {
            Some(Continuation { query: continuation.query, after: Some(last.clone()), returned })
        }
        _ => None,
    };
    (all.into_iter().map(|(_, row)| row).collect(), next)
}

/// One page of an aggregate query's rows.
pub fn page_of_groups<T>(rows: Vec<T>, page: u64, continuation: &Continuation) -> (Vec<T>, Option<Continuation>) {
    let start = usize::try_from(continuation.returned).unwrap_or(usize::MAX);
    let page = usize::try_from(page).unwrap_or(usize::MAX);
    let total = rows.len();
    let taken: Vec<T> = rows.into_iter().skip(start).take(page).collect();
    let returned = start.saturating_add(taken.len());
    let next = (returned < total && !taken.is_empty()).then_some(Continuation {
        query: continuation.query,
        after: None,
        returned: returned as u64,
    });
    (taken, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_clamped() {
        assert_eq!(page_size(None), 100);
        assert_eq!(page_size(Some("10")), 10);
        assert_eq!(page_size(Some("0")), 100);
        assert_eq!(page_size(Some("1000")), 100);
        assert_eq!(page_size(Some("x")), 100);
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_query() {
        let c = Continuation { query: fingerprint("q1"), after: Some("dev-7".into()), returned: 42 };
        let header = c.to_header();
        assert_eq!(Continuation::from_header(Some(&header), "q1"), Ok(c));
        assert!(Continuation::from_header(Some(&header), "q2").is_err());
        assert!(Continuation::from_header(Some("!!"), "q1").is_err());
        assert!(Continuation::from_header(Some("e30"), "q1").is_err()); // "{}"
        assert_eq!(Continuation::from_header(Some(""), "q1"), Ok(Continuation::start("q1")));
    }

    #[test]
    fn merging_pages_never_repeats_or_skips() {
        // Three shards holding ids 0..50 spread unevenly; page through with size 7.
        let ids: Vec<String> = (0..50).map(|i| format!("d{i:03}")).collect();
        let shard_of = |id: &str| id.bytes().map(usize::from).sum::<usize>() % 3;
        let mut seen = Vec::new();
        let mut c = Continuation::start("q");
        loop {
            let wanted = rows_wanted(None, 7, &c);
            let shards = (0..3)
                .map(|s| {
                    ids.iter()
                        .filter(|id| shard_of(id) == s && c.after.as_ref().is_none_or(|a| *id > a))
                        .take(wanted as usize + 1)
                        .map(|id| (id.clone(), id.clone()))
                        .collect()
                })
                .collect();
            let (page, next) = merge_rows(shards, wanted, None, &c);
            seen.extend(page);
            match next {
                Some(n) => c = n,
                None => break,
            }
        }
        assert_eq!(seen, ids);
    }

    #[test]
    fn top_stops_paging() {
        let c = Continuation::start("q");
        let rows = vec![vec![("a".to_owned(), 1), ("b".to_owned(), 2), ("c".to_owned(), 3)]];
        let wanted = rows_wanted(Some(2), 100, &c);
        let (page, next) = merge_rows(rows, wanted, Some(2), &c);
        assert_eq!(page, vec![1, 2]);
        assert_eq!(next, None);
    }

    #[test]
    fn groups_page_by_offset() {
        let c = Continuation::start("q");
        let (first, next) = page_of_groups(vec![1, 2, 3], 2, &c);
        assert_eq!(first, vec![1, 2]);
        let next = next.expect("a second page");
        let (second, last) = page_of_groups(vec![1, 2, 3], 2, &next);
        assert_eq!(second, vec![3]);
        assert_eq!(last, None);
    }
}
