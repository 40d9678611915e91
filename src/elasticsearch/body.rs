//! The body of `PUT /_connector/<id>/_error`, checked the way Elasticsearch checks it.
//!
//! Pure: bytes in, a [`BodyVerdict`] out. The answers match Elasticsearch's byte for byte
//! (`docs/connector-error.md`, "Body rows"; `tests/oracle/main.rs` compares them with the project's
//! oracle on the real jackson-core of each dialect).

use super::dialect::{Dialect, DialectSet, Jackson, Wrapping};
use super::error::EsError;
use super::jackson::canonical_literal;
pub use super::jackson::BodyVerdict;

/// `UpdateConnectorErrorAction.Request.validate()` (V1) and the document id length checked when
/// the update runs (V2, only with `check_length`). `id` is the percent-decoded path segment.
pub fn check_connector_id(id: &str, check_length: bool) -> Result<(), EsError> {
    if id.is_empty() {
        return Err(EsError::bad_request(
            "action_request_validation_exception",
            "Validation Failed: 1: [connector_id] cannot be [null] or [\"\"].;",
        ));
    }
    if check_length && id.len() > MAX_ID_BYTES {
        return Err(EsError::bad_request(
            "action_request_validation_exception",
            format!(
                "Validation Failed: 1: id [{id}] is too long, must be no longer than {MAX_ID_BYTES} bytes but was: {};",
                id.len()
            ),
        ));
    }
    Ok(())
}

/// Elasticsearch's limit on document ids, in UTF-8 bytes.
const MAX_ID_BYTES: usize = 512;

/// Checks one request body as `dialect` does. Never panics, whatever the bytes.
pub fn check_body(body: &[u8], dialect: Dialect) -> BodyVerdict {
    super::jackson::check(body, dialect)
}

/// The verdict every dialect of `dialects` gives `body`, or `None` when two of them differ (then
/// only the node itself can answer). Dialects that read bodies alike (same wrapping and Jackson
/// family) are asked once.
pub fn check_body_agreed(body: &[u8], dialects: DialectSet) -> Option<BodyVerdict> {
    // The common body, `{"error":"<printable ASCII>"}`, reads the same in every dialect.
    if let Some(dialect) = dialects.iter().next() {
        if canonical_literal(body).is_some() {
            return Some(check_body(body, dialect));
        }
    }
    let mut asked: Vec<(Wrapping, Jackson)> = Vec::with_capacity(4);
    let mut agreed: Option<BodyVerdict> = None;
    for dialect in dialects.iter() {
        let key = (dialect.wrapping(), dialect.jackson());
        if asked.contains(&key) {
            continue;
        }
        asked.push(key);
        let verdict = check_body(body, dialect);
        match &agreed {
            None => agreed = Some(verdict),
            Some(first) if *first == verdict => {}
            Some(_) => return None,
        }
    }
    agreed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_must_all_agree_for_a_verdict() {
        use Dialect::*;
        let surrogate = b"{\"error\":\"a\xED\xA0\x80b\"}";
        let set = DialectSet::of;
        assert!(matches!(
            check_body_agreed(surrogate, set(&[Es9C17])),
            Some(BodyVerdict::Accept { .. })
        ));
        assert!(matches!(
            check_body_agreed(surrogate, set(&[Es9C21])),
            Some(BodyVerdict::Reject(_))
        ));
        assert_eq!(check_body_agreed(surrogate, set(&[Es9C17, Es9C21])), None);
        // The same error everywhere: a local answer whatever the version.
        assert!(matches!(
            check_body_agreed(b"{\"error\":1}", DialectSet::ALL),
            Some(BodyVerdict::Reject(_))
        ));
        assert!(matches!(
            check_body_agreed(b"{}", DialectSet::ALL),
            Some(BodyVerdict::Reject(_))
        ));
        assert!(matches!(
            check_body_agreed(b"{\"error\":\"x\"}", DialectSet::ALL),
            Some(BodyVerdict::Accept { .. })
        ));
        // An end of input inside the object: wrappings B and C word it differently.
        let eof = b"{\"error\":\"x\"";
        assert!(check_body_agreed(eof, set(&[Es9B17])).is_some());
        assert_eq!(check_body_agreed(eof, set(&[Es9B17, Es9C17])), None);
        // A bad escape: 8.16/8.17 leave text() unwrapped.
        let escape = b"{\"error\":\"a\\qb\"}";
        let (Some(BodyVerdict::Reject(b0)), Some(BodyVerdict::Reject(b))) = (
            check_body_agreed(escape, set(&[Es8B017])),
            check_body_agreed(escape, set(&[Es8B17])),
        ) else {
            panic!("both refuse a bad escape")
        };
        assert_eq!(b0.chain[1].error_type, "json_parse_exception");
        assert_eq!(b0.root, 0);
        assert_eq!(b.chain[1].error_type, "x_content_parse_exception");
        assert_eq!(check_body_agreed(escape, set(&[Es8B017, Es8B17])), None);
    }

    #[test]
    fn connector_id_rules() {
        let v1 = check_connector_id("", true)
            .err()
            .map(|e| String::from_utf8_lossy(&e.to_compact()).into_owned());
        assert_eq!(
            v1.as_deref(),
            Some(
                r#"{"error":{"root_cause":[{"type":"action_request_validation_exception","reason":"Validation Failed: 1: [connector_id] cannot be [null] or [\"\"].;"}],"type":"action_request_validation_exception","reason":"Validation Failed: 1: [connector_id] cannot be [null] or [\"\"].;"},"status":400}"#
            )
        );
        let long = "x".repeat(513);
        assert!(check_connector_id(&long, true).is_err());
        assert!(check_connector_id(&long, false).is_ok());
        assert!(check_connector_id(&"x".repeat(512), true).is_ok());
        assert!(check_connector_id("a/b", true).is_ok());
    }
}
