//! The query string, as Elasticsearch reads it (`docs/connector-error.md`, "Query parameters").
//!
//! Decoding follows `RestUtils.decodeQueryString`: `&` and `;` separate parameters, the first `=`
//! separates name and value, `+` is a space, a repeated name keeps its last value, a `#` ends the
//! query string, and the first malformed escape (in scanning order) fails the whole request with
//! a 400 `bad_parameter_exception`. So does a name reserved for Elasticsearch's internal markers.
//!
//! The channel and the controller consume `format`, `filter_path`, `pretty`, `human` and
//! `error_trace`; the handler consumes its path parameter `connector_id` (a query parameter of
//! that name is overwritten by the path value). Every other name is unrecognized (step 10).

use super::error::EsError;
use super::java::{is_java_whitespace, java_cmp, java_equals_ignore_case};
use super::route::decode_component;
use super::suggest::{parameter_suggestion, utf16};

/// The parameters Elasticsearch consumes for this route: the candidates of the "did you mean"
/// suggestions of step 10.
pub const CONSUMED: [&str; 6] = [
    "format",
    "filter_path",
    "pretty",
    "human",
    "error_trace",
    "connector_id",
];

/// Names `RestUtils` refuses to take from a request (`RestRequest.INTERNAL_MARKER_REQUEST_PARAMETERS`),
/// compared with Java's `equalsIgnoreCase`.
const RESERVED: [&str; 2] = ["serverlessRequest", "operatorRequest"];

/// Decoded query parameters, last value per name, in order of first appearance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    entries: Vec<(String, String)>,
}

impl Params {
    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// `RestRequest.paramAsBoolean(name, false)`: absent or blank is `false`, empty is `true`,
    /// otherwise exactly `true` or `false`; anything else is the `IllegalArgumentException`
    /// message, which callers render in the format of their step.
    pub fn boolean(&self, name: &str) -> Result<bool, String> {
        match self.get(name) {
            None => Ok(false),
            Some("") => Ok(true),
            Some(v) if !v.chars().any(|c| !is_java_whitespace(c)) => Ok(false),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(format!(
                "Failed to parse value [{v}] as only [true] or [false] are allowed."
            )),
        }
    }

    /// Every name Elasticsearch does not consume on this route, in order of appearance.
    pub fn unconsumed(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(n, _)| !CONSUMED.contains(&n.as_str()))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Decodes the query string (what follows the first `?`; `None` when there is none).
pub fn decode_query(query: Option<&str>) -> Result<Params, EsError> {
    let mut params = Params::default();
    let Some(query) = query else { return Ok(params) };
    let bytes = query.as_bytes();
    // `queryStringLength`: a `#` ends the query string.
    let end = bytes.iter().position(|&c| c == b'#').unwrap_or(bytes.len());
    let s = &bytes[..end];
    let decode = |part: &[u8]| decode_component(part, true).map_err(|m| bad_parameter(&m));

    let mut name: Option<String> = None;
    let mut pos = 0;
    for (i, &c) in s.iter().enumerate() {
        if c == b'=' && name.is_none() {
            if pos != i {
                name = Some(decode(&s[pos..i])?);
            }
            pos = i + 1;
        } else if c == b'&' || c == b';' {
            if let Some(n) = name.take() {
                let value = decode(&s[pos..i])?;
                add(&mut params, n, value)?;
            } else if pos != i {
                // `&a&`: a name without `=` has the empty value.
                add(&mut params, decode(&s[pos..i])?, String::new())?;
            }
            pos = i + 1;
        }
    }
    let i = s.len();
    if pos != i {
        match name {
            None => add(&mut params, decode(&s[pos..i])?, String::new())?,
            Some(n) => {
                let value = decode(&s[pos..i])?;
                add(&mut params, n, value)?;
            }
        }
    } else if let Some(n) = name {
        add(&mut params, n, String::new())?;
    }
    Ok(params)
}

fn add(params: &mut Params, name: String, value: String) -> Result<(), EsError> {
    if RESERVED.iter().any(|r| java_equals_ignore_case(&name, r)) {
        return Err(bad_parameter(&format!(
            "parameter [{name}] is reserved and may not be set"
        )));
    }
    match params.entries.iter_mut().find(|(n, _)| *n == name) {
        Some(entry) => entry.1 = value,
        None => params.entries.push((name, value)),
    }
    Ok(())
}

/// The 400 of a query string that does not decode: Elasticsearch wraps the
/// `IllegalArgumentException` in a `BadParameterException`, whose message is the cause's
/// `toString()`; being no `ElasticsearchException`, it is its own root cause.
pub fn bad_parameter(message: &str) -> EsError {
    EsError::bad_request(
        "bad_parameter_exception",
        format!("java.lang.IllegalArgumentException: {message}"),
    )
    .caused_by("illegal_argument_exception", message)
}

/// A 400 `illegal_argument_exception` (for instance a `pretty` that is not a boolean).
pub fn illegal_argument(message: impl Into<Vec<u8>>) -> EsError {
    EsError::bad_request("illegal_argument_exception", message)
}

/// Step 10: the error for unrecognized parameters, `None` when there are none.
/// `decoded_path` is `RestRequest.path()`: the decoded path, without the query string. Names are
/// listed in Java string order (a `TreeSet`), each with its suggestions among [`CONSUMED`].
pub fn unrecognized(decoded_path: &str, names: &[String]) -> Option<EsError> {
    let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
    names.sort_by(|a, b| java_cmp(a, b));
    names.dedup();
    if names.is_empty() {
        return None;
    }
    let plural = if names.len() > 1 { "s" } else { "" };
    let mut message = format!("request [{decoded_path}] contains unrecognized parameter{plural}: ");
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            message.push_str(", ");
        }
        message.push('[');
        message.push_str(name);
        message.push(']');
        message.push_str(&parameter_suggestion(&utf16(name), &CONSUMED));
    }
    Some(illegal_argument(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(q: &str) -> Params {
        decode_query(Some(q)).expect("decodes")
    }

    fn reason(e: &EsError) -> String {
        String::from_utf8_lossy(&e.top().reason).into_owned()
    }

    #[test]
    fn names_values_and_separators() {
        let p = decode("a&b=1;c=x+y&d=%26&e=");
        assert_eq!(p.get("a"), Some(""));
        assert_eq!(p.get("b"), Some("1"));
        assert_eq!(p.get("c"), Some("x y"));
        assert_eq!(p.get("d"), Some("&"));
        assert_eq!(p.get("e"), Some(""));
        assert_eq!(p.unconsumed(), ["a", "b", "c", "d", "e"]);
        // A value without a name is a name (RestUtils' own quirk); a `#` ends the query.
        let p = decode("=v&x=1#y=2");
        assert_eq!(p.get("v"), Some(""));
        assert_eq!(p.get("x"), Some("1"));
        assert!(!p.contains("y"));
        assert_eq!(decode_query(None), Ok(Params::default()));
        assert_eq!(decode(""), Params::default());
    }

    #[test]
    fn last_value_wins() {
        let p = decode("pretty=x&pretty=true");
        assert_eq!(p.boolean("pretty"), Ok(true));
        let p = decode("pretty=true&pretty=x");
        assert_eq!(
            p.boolean("pretty"),
            Err("Failed to parse value [x] as only [true] or [false] are allowed.".to_owned())
        );
    }

    #[test]
    fn booleans() {
        assert_eq!(decode("pretty").boolean("pretty"), Ok(true));
        assert_eq!(decode("pretty=").boolean("pretty"), Ok(true));
        assert_eq!(decode("pretty=true").boolean("pretty"), Ok(true));
        assert_eq!(decode("pretty=false").boolean("pretty"), Ok(false));
        assert_eq!(decode("pretty=+").boolean("pretty"), Ok(false));
        assert_eq!(decode("human").boolean("pretty"), Ok(false));
        assert_eq!(
            decode("human=TRUE").boolean("human"),
            Err("Failed to parse value [TRUE] as only [true] or [false] are allowed.".to_owned())
        );
        assert_eq!(
            decode("pretty=1").boolean("pretty"),
            Err("Failed to parse value [1] as only [true] or [false] are allowed.".to_owned())
        );
    }

    #[test]
    fn decode_errors_are_bad_parameter_exceptions() {
        let e = decode_query(Some("a=%")).expect_err("fails");
        assert_eq!(
            String::from_utf8_lossy(&e.to_compact()),
            r#"{"error":{"root_cause":[{"type":"bad_parameter_exception","reason":"java.lang.IllegalArgumentException: unterminated escape sequence at end of string: %"}],"type":"bad_parameter_exception","reason":"java.lang.IllegalArgumentException: unterminated escape sequence at end of string: %","caused_by":{"type":"illegal_argument_exception","reason":"unterminated escape sequence at end of string: %"}},"status":400}"#
        );
        // The component decoded is the name or the value, not the whole query string.
        let e = decode_query(Some("ok=1&x%zz=1")).expect_err("fails");
        assert_eq!(
            reason(&e),
            "java.lang.IllegalArgumentException: invalid escape sequence `%zz' at index 1 of: x%zz"
        );
        let e = decode_query(Some("x=a%4")).expect_err("fails");
        assert_eq!(
            reason(&e),
            "java.lang.IllegalArgumentException: partial escape sequence at end of string: a%4"
        );
        // The first error in scanning order wins.
        let e = decode_query(Some("a%=%zz")).expect_err("fails");
        assert_eq!(
            reason(&e),
            "java.lang.IllegalArgumentException: unterminated escape sequence at end of string: a%"
        );
    }

    #[test]
    fn reserved_names() {
        let e = decode_query(Some("operatorRequest=x")).expect_err("fails");
        assert_eq!(
            reason(&e),
            "java.lang.IllegalArgumentException: parameter [operatorRequest] is reserved and may not be set"
        );
        let e = decode_query(Some("SERVERLESSREQUEST")).expect_err("fails");
        assert_eq!(
            reason(&e),
            "java.lang.IllegalArgumentException: parameter [SERVERLESSREQUEST] is reserved and may not be set"
        );
        assert!(decode_query(Some("%C5%BFerverlessRequest")).is_err());
        assert!(decode_query(Some("operatorRequests")).is_ok());
    }

    #[test]
    fn consumed_parameters_are_recognized() {
        let p = decode("pretty&human&error_trace&format=json&filter_path=a&connector_id=x&foo");
        assert_eq!(p.unconsumed(), ["foo"]);
    }

    #[test]
    fn unrecognized_texts() {
        let path = "/_connector/x/_error";
        assert_eq!(unrecognized(path, &[]), None);
        let e = unrecognized(path, &["foo".to_owned()]).expect("error");
        assert_eq!(
            String::from_utf8_lossy(&e.to_compact()),
            r#"{"error":{"root_cause":[{"type":"illegal_argument_exception","reason":"request [/_connector/x/_error] contains unrecognized parameter: [foo]"}],"type":"illegal_argument_exception","reason":"request [/_connector/x/_error] contains unrecognized parameter: [foo]"},"status":400}"#
        );
        let e = unrecognized(path, &["prety".to_owned()]).expect("error");
        assert_eq!(
            reason(&e),
            "request [/_connector/x/_error] contains unrecognized parameter: [prety] -> did you mean [pretty]?"
        );
        let names = [
            "source".to_owned(),
            "fo_path".to_owned(),
            "b".to_owned(),
            "format_path".to_owned(),
        ];
        let e = unrecognized("/_connector/a b/_error/", &names).expect("error");
        assert_eq!(
            reason(&e),
            "request [/_connector/a b/_error/] contains unrecognized parameters: [b], \
             [fo_path] -> did you mean any of [format, filter_path]?, \
             [format_path] -> did you mean any of [filter_path, format]?, [source]"
        );
    }

    #[test]
    fn java_whitespace() {
        assert!(is_java_whitespace(' '));
        assert!(is_java_whitespace('\u{1F}'));
        assert!(!is_java_whitespace('\u{A0}'));
        assert!(!is_java_whitespace('\u{2007}'));
        assert!(is_java_whitespace('\u{3000}'));
    }
}
