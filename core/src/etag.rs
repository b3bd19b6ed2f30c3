//! `If-Match` as the SDKs send it (spec §2.2).

/// Whether an `If-Match` header value allows a write to a resource whose etag is `current`.
/// Accepts `*`, `"*"`, `<etag>`, `"<etag>"` and `W/"<etag>"`; no header means unconditional.
pub fn if_match_allows(current: &str, if_match: Option<&str>) -> bool {
    let Some(value) = if_match else { return true };
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(v);
    v == "*" || v == current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        for ok in
            [None, Some("*"), Some("\"*\""), Some("AAAAAAAAAAE="), Some("\"AAAAAAAAAAE=\""), Some("W/\"AAAAAAAAAAE=\"")]
        {
            assert!(if_match_allows("AAAAAAAAAAE=", ok), "{ok:?}");
        }
        assert!(!if_match_allows("AAAAAAAAAAE=", Some("\"AAAAAAAAAAI=\"")));
        assert!(!if_match_allows("AAAAAAAAAAE=", Some("")));
    }
}
