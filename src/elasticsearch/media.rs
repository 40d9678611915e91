//! `Content-Type` and `Accept` as Elasticsearch reads them (`docs/connector-error.md`,
//! "Media types and compatible-with").
//!
//! Building a `RestRequest` parses `Accept`, then `Content-Type` (`ParsedMediaType`), then checks
//! the `compatible-with` versions (`RestCompatibleVersionHelper`). A failure is a 400
//! `media_type_header_exception`; Elasticsearch then drops the failed headers and builds the request
//! again (`AbstractHttpServerTransport.requestWithoutFailedHeader`), so the error is rendered in the
//! format the remaining headers ask for. [`negotiate`] replays exactly that.
//!
//! Header values are Java strings made one `char` per byte (Netty reads headers as ISO-8859-1):
//! use [`header_values`] to get them.

use http::header::{HeaderMap, HeaderName};

use super::dialect::Major;
use super::error::EsError;
use super::java::{is_java_whitespace, java_lower_case, java_split, java_trim, parse_java_byte};
use super::route::latin1;

/// Elasticsearch's `XContentType`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XContent {
    /// `application/json`, `application/x-ndjson`, `application/*`.
    Json,
    /// `application/vnd.elasticsearch+json`, `…+x-ndjson`.
    VndJson,
    /// `application/smile`.
    Smile,
    /// `application/vnd.elasticsearch+smile`.
    VndSmile,
    /// `application/yaml`.
    Yaml,
    /// `application/vnd.elasticsearch+yaml`.
    VndYaml,
    /// `application/cbor`.
    Cbor,
    /// `application/vnd.elasticsearch+cbor`.
    VndCbor,
}

impl XContent {
    /// `XContentType.fromFormat`: the `format` query parameter, case-insensitive.
    pub fn from_format(format: &str) -> Option<XContent> {
        Some(match format.to_ascii_lowercase().as_str() {
            "json" => XContent::Json,
            "vnd_json" => XContent::VndJson,
            "smile" => XContent::Smile,
            "vnd_smile" => XContent::VndSmile,
            "yaml" => XContent::Yaml,
            "vnd_yaml" => XContent::VndYaml,
            "cbor" => XContent::Cbor,
            "vnd_cbor" => XContent::VndCbor,
            _ => return None,
        })
    }

    /// JSON, plain or versioned: the only formats esgate reads and writes.
    pub fn is_json(self) -> bool {
        matches!(self, XContent::Json | XContent::VndJson)
    }

    /// `mediaTypeWithoutParameters()`, the start of a response `content-type`.
    pub fn media_type(self) -> &'static str {
        match self {
            XContent::Json => "application/json",
            XContent::VndJson => "application/vnd.elasticsearch+json",
            XContent::Smile => "application/smile",
            XContent::VndSmile => "application/vnd.elasticsearch+smile",
            XContent::Yaml => "application/yaml",
            XContent::VndYaml => "application/vnd.elasticsearch+yaml",
            XContent::Cbor => "application/cbor",
            XContent::VndCbor => "application/vnd.elasticsearch+cbor",
        }
    }
}

/// A parsed media type (`ParsedMediaType`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaType {
    /// The header value as received (its `toString()`, quoted in compatibility errors).
    pub original: String,
    /// `type/subtype`, lower case.
    pub essence: String,
    /// Parameters, names and values lower case; a repeated name keeps its last value.
    pub params: Vec<(String, String)>,
}

/// Why a header value does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The `IllegalArgumentException` message (`invalid media-type [...]`, ...).
    Invalid(String),
    /// A value made only of `;`: Java's split gives an empty array and Elasticsearch fails with
    /// an `ArrayIndexOutOfBoundsException`, whose answer is not known.
    Unknown,
}

impl MediaType {
    /// `ParsedMediaType.parseMediaType`: `Ok(None)` for a media range (a `,` anywhere) or `*/*`,
    /// which Elasticsearch treats as no header at all.
    pub fn parse(value: &str) -> Result<Option<MediaType>, ParseError> {
        if value.contains(',') || value == "*/*" {
            return Ok(None);
        }
        let lower = java_lower_case(value);
        let elements = java_split(lower.as_bytes(), b';');
        let Some((first, rest)) = elements.split_first() else {
            return Err(ParseError::Unknown);
        };
        let invalid = || ParseError::Invalid(format!("invalid media-type [{value}]"));
        let parts = java_split(first, b'/');
        let [kind, subtype] = parts.as_slice() else {
            return Err(invalid());
        };
        let (kind, subtype) = (java_trim(kind), java_trim(subtype));
        if !is_token(kind) || !is_token(subtype) {
            return Err(invalid());
        }
        let mut params: Vec<(String, String)> = Vec::new();
        for element in rest {
            let element = java_trim(element);
            if element.is_empty() {
                continue;
            }
            // Spaces are allowed between parameters, not around `=`.
            let key_value = java_split(element, b'=');
            let [key, val] = key_value.as_slice() else {
                return Err(ParseError::Invalid(format!("invalid parameters for header [{value}]")));
            };
            if ends_with_whitespace(key) || starts_with_whitespace(val) {
                return Err(ParseError::Invalid(format!("invalid parameters for header [{value}]")));
            }
            let (key, val) = (utf8(java_trim(key)), utf8(java_trim(val)));
            match params.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = val,
                None => params.push((key, val)),
            }
        }
        Ok(Some(MediaType {
            original: value.to_owned(),
            essence: format!("{}/{}", utf8(kind), utf8(subtype)),
            params,
        }))
    }

    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// `toMediaType(XContentType.MEDIA_TYPE_REGISTRY)`: the `XContentType`, if the type is one and
    /// its registered parameters are valid (the vendor types require `compatible-with` to be
    /// digits when present; other parameters are free).
    pub fn xcontent(&self) -> Option<XContent> {
        const VENDOR: &str = "application/vnd.elasticsearch+";
        let (kind, vendor) = match self.essence.strip_prefix(VENDOR) {
            Some(rest) => (rest, true),
            None => (self.essence.strip_prefix("application/")?, false),
        };
        let x = match (kind, vendor) {
            ("json" | "x-ndjson" | "*", false) => XContent::Json,
            ("smile", false) => XContent::Smile,
            ("yaml", false) => XContent::Yaml,
            ("cbor", false) => XContent::Cbor,
            ("json" | "x-ndjson", true) => XContent::VndJson,
            ("smile", true) => XContent::VndSmile,
            ("yaml", true) => XContent::VndYaml,
            ("cbor", true) => XContent::VndCbor,
            _ => return None,
        };
        let digits = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        if vendor && self.param("compatible-with").is_some_and(|v| !digits(v)) {
            return None;
        }
        Some(x)
    }

    /// `RestCompatibleVersionHelper.parseVersion`: `Byte.parseByte` of `compatible-with`.
    /// `Err` when it is no byte: Elasticsearch lets the `NumberFormatException` escape, with an
    /// answer that is not known (`docs/connector-error.md`, "What esgate forwards unchecked, and why").
    fn version(&self) -> Result<Option<i8>, ()> {
        self.param("compatible-with")
            .map(|v| parse_java_byte(v).ok_or(()))
            .transpose()
    }
}

/// The values of one header, in order, as Java strings.
pub fn header_values(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
    headers.get_all(name).iter().map(|v| latin1(v.as_bytes())).collect()
}

/// What the `RestRequest` was built with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// The parsed `Accept` (`None`: absent, a media range, or `*/*`).
    pub accept: Option<MediaType>,
    /// The parsed `Content-Type` (`None`: absent, a media range, or `*/*`).
    pub content_type: Option<MediaType>,
    /// The raw `Content-Type` values (quoted by the 406).
    pub content_type_values: Vec<String>,
}

/// The result of building the request's media types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// Both headers are fine.
    Accepted(Negotiated),
    /// A 400 `media_type_header_exception`; `rest` is the request without the failed headers,
    /// which decides the format of the answer.
    Rejected {
        /// The first failure (later ones are only suppressed in Elasticsearch).
        error: EsError,
        /// The headers left after dropping the failed ones.
        rest: Negotiated,
    },
    /// Elasticsearch fails in a way whose answer is not known: forward.
    Unchecked(&'static str),
}

/// Replays the media-type part of building a `RestRequest`, with Elasticsearch's retries without
/// the failed headers. `has_content`: the (decoded) body is not empty; `major`: the node's REST
/// compatibility window.
pub fn negotiate(accept: &[String], content_type: &[String], has_content: bool, major: Major) -> Negotiation {
    let mut accept = accept.to_vec();
    let mut content_type = content_type.to_vec();
    let mut first: Option<EsError> = None;
    // Each failure drops at least one header, so this ends after at most three rounds.
    for _ in 0..3 {
        match build(&accept, &content_type, has_content, major) {
            Ok(negotiated) => {
                return match first {
                    None => Negotiation::Accepted(negotiated),
                    Some(error) => Negotiation::Rejected {
                        error,
                        rest: negotiated,
                    },
                }
            }
            Err(Failure::Unchecked(why)) => return Negotiation::Unchecked(why),
            Err(Failure::Header {
                error,
                accept: drop_accept,
                content_type: drop_content_type,
            }) => {
                first.get_or_insert(error);
                if drop_accept {
                    accept.clear();
                }
                if drop_content_type {
                    content_type.clear();
                }
            }
        }
    }
    Negotiation::Unchecked("media-type headers that keep failing")
}

enum Failure {
    Header {
        error: EsError,
        accept: bool,
        content_type: bool,
    },
    Unchecked(&'static str),
}

/// The `RestRequest` constructor, for the media types: `Accept`, then `Content-Type`, then the
/// compatible versions.
fn build(accept: &[String], content_type: &[String], has_content: bool, major: Major) -> Result<Negotiated, Failure> {
    let parsed_accept = parse_header(accept, "Accept").map_err(|e| e.into_failure("Accept", true, false))?;
    let parsed_content_type =
        parse_header(content_type, "Content-Type").map_err(|e| e.into_failure("Content-Type", false, true))?;
    check_versions(parsed_accept.as_ref(), parsed_content_type.as_ref(), has_content, major)?;
    Ok(Negotiated {
        accept: parsed_accept,
        content_type: parsed_content_type,
        content_type_values: content_type.to_vec(),
    })
}

impl ParseError {
    fn into_failure(self, header: &str, accept: bool, content_type: bool) -> Failure {
        match self {
            ParseError::Invalid(detail) => Failure::Header {
                error: header_error(header, "illegal_argument_exception", &detail),
                accept,
                content_type,
            },
            ParseError::Unknown => Failure::Unchecked("a media-type header made only of `;`"),
        }
    }
}

/// `RestRequest.parseHeaderWithMediaType`.
fn parse_header(values: &[String], name: &str) -> Result<Option<MediaType>, ParseError> {
    match values {
        [] => Ok(None),
        [value] if value.chars().any(|c| !is_java_whitespace(c)) => MediaType::parse(value),
        [_] => Err(ParseError::Invalid(format!("Header [{name}] cannot be empty."))),
        _ => Err(ParseError::Invalid(format!(
            "Incorrect header [{name}]. Only one value should be provided"
        ))),
    }
}

/// `RestCompatibleVersionHelper.getCompatibleVersion`, its checks in their order.
fn check_versions(
    accept: Option<&MediaType>,
    content_type: Option<&MediaType>,
    has_content: bool,
    major: Major,
) -> Result<(), Failure> {
    let (current, minimum) = (major.current(), major.minimum());
    let unknown = |()| Failure::Unchecked("a compatible-with version that is not a byte");
    let a_version = accept.map(MediaType::version).transpose().map_err(unknown)?.flatten();
    let c_version = content_type
        .map(MediaType::version)
        .transpose()
        .map_err(unknown)?
        .flatten();
    let accept_version = a_version.unwrap_or(current);
    let content_type_version = c_version.unwrap_or(current);
    let shown = |m: Option<&MediaType>| m.map_or("null", |m| m.original.as_str()).to_owned();
    let (a, c) = (shown(accept), shown(content_type));
    let fail = |message: String| Failure::Header {
        error: header_error("Accept, Content-Type", "status_exception", &message),
        accept: true,
        content_type: true,
    };
    if !(minimum..=current).contains(&accept_version) {
        return Err(fail(format!(
            "Accept version must be either version {current} or {minimum}, but found {accept_version}. Accept={a}"
        )));
    }
    if has_content {
        if !(minimum..=current).contains(&content_type_version) {
            return Err(fail(format!(
                "Content-Type version must be either version {current} or {minimum}, but found {content_type_version}. Content-Type={c}"
            )));
        }
        if content_type_version != accept_version {
            return Err(fail(format!(
                "A compatible version is required on both Content-Type and Accept headers if either one has requested a \
                 compatible version and the compatible versions must match. Accept={a}, Content-Type={c}"
            )));
        }
        if a_version.is_some() != c_version.is_some() {
            return Err(fail(format!(
                "A compatible version is required on both Content-Type and Accept headers if either one has requested a \
                 compatible version. Accept={a}, Content-Type={c}"
            )));
        }
    }
    Ok(())
}

/// The 400 of `MediaTypeHeaderException`: its own root cause, with the parse failure as cause.
/// `headers` is the printed set of failed header names; for the compatibility checks it is
/// `Set.of("Accept", "Content-Type")`, whose order varies per JVM (`docs/dialects.md`, "Not modelled"): esgate prints the order
/// observed in published answers.
fn header_error(headers: &str, cause_type: &'static str, detail: &str) -> EsError {
    EsError::bad_request(
        "media_type_header_exception",
        format!("Invalid media-type value on headers [{headers}]"),
    )
    .caused_by(cause_type, detail)
}

impl Negotiated {
    /// The request's `XContentType` (`RestRequest.getXContentType()`).
    pub fn body_type(&self) -> Option<XContent> {
        self.content_type.as_ref().and_then(MediaType::xcontent)
    }

    /// The output format (`AbstractRestChannel.newBuilder`): the `format` parameter when it names
    /// one, then `Accept` when it maps to one, then the request's `Content-Type`, then JSON.
    pub fn output(&self, format: Option<&str>) -> XContent {
        format
            .filter(|f| f.chars().any(|c| !is_java_whitespace(c)))
            .and_then(XContent::from_format)
            .or_else(|| self.accept.as_ref().and_then(MediaType::xcontent))
            .or_else(|| self.body_type())
            .unwrap_or(XContent::Json)
    }

    /// The response `content-type` for `output`: its media type, then the `Accept` parameters as
    /// `;name=value` with no spaces (`ParsedMediaType.responseContentTypeHeader`), whatever chose
    /// the format.
    pub fn response_content_type(&self, output: XContent) -> String {
        debug_assert!(self.accept_params_in_fixed_order());
        let mut value = output.media_type().to_owned();
        for (k, v) in self.accept.iter().flat_map(|a| a.params.iter()) {
            value.push(';');
            value.push_str(k);
            value.push('=');
            value.push_str(v);
        }
        value
    }

    /// False when `Accept` has two or more parameters: `ParsedMediaType` keeps them in a
    /// `Map.copyOf`, whose iteration order is salted per JVM start, so the order in which
    /// Elasticsearch echoes them is not fixed (`docs/connector-error.md`, "Response headers").
    pub fn accept_params_in_fixed_order(&self) -> bool {
        self.accept.as_ref().is_none_or(|a| a.params.len() < 2)
    }

    /// Step 6, for a request with a body (`RestController.dispatchRequest`): whether Elasticsearch
    /// reads it, and as what.
    pub fn check_body(&self) -> BodyType {
        match self.body_type() {
            Some(x) if x.is_json() => BodyType::Json,
            Some(_) => BodyType::NonJson,
            None if self.content_type_values.is_empty() => {
                BodyType::NotAcceptable("Content-Type header is missing".to_owned())
            }
            None => BodyType::NotAcceptable(format!(
                "Content-Type header [{}] is not supported",
                self.content_type_values.join(",")
            )),
        }
    }
}

/// The request body's media type, when the body has content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyType {
    /// JSON: the body is checked locally.
    Json,
    /// YAML, CBOR or SMILE: forwarded.
    NonJson,
    /// 406 in the simple format, with this text (the browser-safelisted types `text/plain`,
    /// `multipart/form-data`, `application/x-www-form-urlencoded` are no `XContentType` either).
    NotAcceptable(String),
}

/// RFC 7230 `tchar`s, one or more (`ParsedMediaType.TCHAR_PATTERN`).
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn ends_with_whitespace(s: &[u8]) -> bool {
    utf8(s).chars().next_back().is_none_or(is_java_whitespace)
}

fn starts_with_whitespace(s: &[u8]) -> bool {
    utf8(s).chars().next().is_none_or(is_java_whitespace)
}

/// Slices of a `str` cut at ASCII separators are whole UTF-8.
fn utf8(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> MediaType {
        MediaType::parse(v).expect("parses").expect("a media type")
    }

    fn invalid(v: &str) -> String {
        match MediaType::parse(v) {
            Err(ParseError::Invalid(m)) => m,
            other => panic!("{v}: {other:?}"),
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn rejected(accept: &[&str], content_type: &[&str], has_content: bool) -> (String, Negotiated) {
        match negotiate(&strings(accept), &strings(content_type), has_content, Major::V9) {
            Negotiation::Rejected { error, rest } => (String::from_utf8_lossy(&error.to_compact()).into_owned(), rest),
            other => panic!("{other:?}"),
        }
    }

    fn accepted(accept: &[&str], content_type: &[&str], has_content: bool) -> Negotiated {
        match negotiate(&strings(accept), &strings(content_type), has_content, Major::V9) {
            Negotiation::Accepted(n) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_like_parsed_media_type() {
        let m = parse("Application/JSON; Charset=UTF-8");
        assert_eq!(m.essence, "application/json");
        assert_eq!(m.params, [("charset".to_owned(), "utf-8".to_owned())]);
        assert_eq!(m.original, "Application/JSON; Charset=UTF-8");
        // Empty parameters and trailing separators are skipped (Java's split drops trailing ones).
        assert_eq!(parse("application/json;;").params, []);
        assert_eq!(parse("application/json/").essence, "application/json");
        assert_eq!(parse(" application / json ").essence, "application/json");
        let m = parse("a/b; x=1; x=2; y=3");
        assert_eq!(
            m.params,
            [("x".to_owned(), "2".to_owned()), ("y".to_owned(), "3".to_owned())]
        );
        // Media ranges are no media type.
        assert_eq!(MediaType::parse("*/*"), Ok(None));
        assert_eq!(MediaType::parse("application/json, text/plain"), Ok(None));
        assert_eq!(MediaType::parse(";"), Err(ParseError::Unknown));
    }

    #[test]
    fn invalid_texts() {
        assert_eq!(invalid("json"), "invalid media-type [json]");
        assert_eq!(invalid("application/json/x"), "invalid media-type [application/json/x]");
        assert_eq!(invalid("/json"), "invalid media-type [/json]");
        assert_eq!(invalid("appl(ication/json"), "invalid media-type [appl(ication/json]");
        assert_eq!(
            invalid("application/json; charset"),
            "invalid parameters for header [application/json; charset]"
        );
        assert_eq!(invalid("a/b; x =1"), "invalid parameters for header [a/b; x =1]");
        assert_eq!(invalid("a/b; x= 1"), "invalid parameters for header [a/b; x= 1]");
        assert_eq!(invalid("a/b; x==1"), "invalid parameters for header [a/b; x==1]");
        assert_eq!(invalid("a/b; =1"), "invalid parameters for header [a/b; =1]");
    }

    #[test]
    fn xcontent_types() {
        for (v, x) in [
            ("application/json", Some(XContent::Json)),
            ("application/x-ndjson", Some(XContent::Json)),
            ("application/*", Some(XContent::Json)),
            ("application/json; charset=latin1", Some(XContent::Json)),
            (
                "application/vnd.elasticsearch+json; compatible-with=9",
                Some(XContent::VndJson),
            ),
            (
                "application/vnd.elasticsearch+x-ndjson;compatible-with=8",
                Some(XContent::VndJson),
            ),
            ("application/vnd.elasticsearch+json;compatible-with=abc", None),
            ("application/yaml", Some(XContent::Yaml)),
            ("application/vnd.elasticsearch+cbor", Some(XContent::VndCbor)),
            ("application/smile", Some(XContent::Smile)),
            ("text/plain", None),
            ("text/json", None),
            ("application/octet-stream", None),
        ] {
            assert_eq!(parse(v).xcontent(), x, "{v}");
        }
    }

    #[test]
    fn header_errors_are_media_type_header_exceptions() {
        let (body, rest) = rejected(&[], &["foo"], true);
        assert_eq!(
            body,
            r#"{"error":{"root_cause":[{"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Content-Type]"}],"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Content-Type]","caused_by":{"type":"illegal_argument_exception","reason":"invalid media-type [foo]"}},"status":400}"#
        );
        assert_eq!(rest, Negotiated::default());
        let (body, _) = rejected(&[], &["", ""], false);
        assert!(body.ends_with(
            r#""reason":"Incorrect header [Content-Type]. Only one value should be provided"}},"status":400}"#
        ));
        let (body, _) = rejected(&[], &[""], false);
        assert!(body.ends_with(r#""reason":"Header [Content-Type] cannot be empty."}},"status":400}"#));
        // Accept is parsed first; the answer keeps the Content-Type that parsed.
        let (body, rest) = rejected(&["nonsense"], &["application/yaml"], true);
        assert!(body.contains(r#""reason":"Invalid media-type value on headers [Accept]""#));
        assert!(body.ends_with(r#""reason":"invalid media-type [nonsense]"}},"status":400}"#));
        assert_eq!(rest.body_type(), Some(XContent::Yaml));
        // Both invalid: Accept's error, and neither header left.
        let (body, rest) = rejected(&["nonsense"], &["x"], true);
        assert!(body.contains("[nonsense]"));
        assert_eq!(rest, Negotiated::default());
        assert!(matches!(
            negotiate(&strings(&[";"]), &[], false, Major::V9),
            Negotiation::Unchecked(_)
        ));
    }

    #[test]
    fn compatible_with_checks_in_order() {
        let vnd = |v: u8| format!("application/vnd.elasticsearch+json;compatible-with={v}");
        let status = |accept: &[&str], ct: &[&str], body: bool| {
            let (text, rest) = rejected(accept, ct, body);
            assert_eq!(rest, Negotiated::default());
            let prefix = r#"{"error":{"root_cause":[{"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Accept, Content-Type]"}],"type":"media_type_header_exception","reason":"Invalid media-type value on headers [Accept, Content-Type]","caused_by":{"type":"status_exception","reason":""#;
            let reason = text
                .strip_prefix(prefix)
                .and_then(|t| t.strip_suffix(r#""}},"status":400}"#))
                .expect("shape");
            reason.to_owned()
        };
        assert_eq!(
            status(&[&vnd(7)], &[], false),
            "Accept version must be either version 9 or 8, but found 7. Accept=application/vnd.elasticsearch+json;compatible-with=7"
        );
        assert_eq!(
            status(&["application/json"], &[&vnd(10)], true),
            "Content-Type version must be either version 9 or 8, but found 10. Content-Type=application/vnd.elasticsearch+json;compatible-with=10"
        );
        assert_eq!(
            status(&[&vnd(9)], &[&vnd(8)], true),
            "A compatible version is required on both Content-Type and Accept headers if either one has requested a compatible version and the compatible versions must match. Accept=application/vnd.elasticsearch+json;compatible-with=9, Content-Type=application/vnd.elasticsearch+json;compatible-with=8"
        );
        assert_eq!(
            status(&[&vnd(9)], &["application/json"], true),
            "A compatible version is required on both Content-Type and Accept headers if either one has requested a compatible version. Accept=application/vnd.elasticsearch+json;compatible-with=9, Content-Type=application/json"
        );
        assert_eq!(
            status(&[], &[&vnd(9)], true),
            "A compatible version is required on both Content-Type and Accept headers if either one has requested a compatible version. Accept=null, Content-Type=application/vnd.elasticsearch+json;compatible-with=9"
        );
        // `*/*` is no media type, so it prints as null too.
        assert!(status(&["*/*"], &[&vnd(8)], true)
            .ends_with("Accept=null, Content-Type=application/vnd.elasticsearch+json;compatible-with=8"));
        // Any media type's compatible-with counts, and a sign is allowed (Byte.parseByte).
        assert!(status(&["text/plain; compatible-with=-1"], &[], false).contains("but found -1."));
        // Without a body only Accept is checked.
        accepted(&[&vnd(9)], &["application/json"], false);
        accepted(&[&vnd(8)], &[&vnd(8)], true);
        accepted(&[&vnd(9)], &[&vnd(9)], true);
        // Not a byte: Elasticsearch's answer is not known.
        for v in ["abc", "999", ""] {
            let accept = format!("application/json;compatible-with={v}");
            let n = negotiate(std::slice::from_ref(&accept), &[], false, Major::V9);
            if v.is_empty() {
                assert!(matches!(n, Negotiation::Rejected { .. }), "{accept}");
            } else {
                assert!(matches!(n, Negotiation::Unchecked(_)), "{accept}");
            }
        }
    }

    #[test]
    fn output_format_and_content_type() {
        let n = accepted(&["application/vnd.elasticsearch+json; compatible-with=9"], &[], false);
        assert_eq!(n.output(None), XContent::VndJson);
        assert_eq!(
            n.response_content_type(n.output(None)),
            "application/vnd.elasticsearch+json;compatible-with=9"
        );
        // The format parameter wins, and the Accept parameters are still echoed.
        assert_eq!(n.output(Some("JSON")), XContent::Json);
        assert_eq!(
            n.response_content_type(XContent::Json),
            "application/json;compatible-with=9"
        );
        assert_eq!(n.output(Some("yaml")), XContent::Yaml);
        // An unknown or blank format falls back to Accept.
        assert_eq!(n.output(Some("xml")), XContent::VndJson);
        assert_eq!(n.output(Some(" ")), XContent::VndJson);
        // Accept that maps to nothing: the Content-Type, then JSON.
        let n = accepted(&["text/plain"], &["application/cbor"], false);
        assert_eq!(n.output(None), XContent::Cbor);
        let n = accepted(&["*/*"], &["text/plain"], false);
        assert_eq!(n.output(None), XContent::Json);
        assert_eq!(n.response_content_type(XContent::Json), "application/json");
        let n = accepted(&["application/yaml"], &["application/json"], true);
        assert_eq!(n.output(None), XContent::Yaml);
        assert!(!n.output(None).is_json());
    }

    #[test]
    fn body_types_and_406_texts() {
        assert_eq!(
            accepted(&[], &[], true).check_body(),
            BodyType::NotAcceptable("Content-Type header is missing".to_owned())
        );
        for ct in [
            "text/plain",
            "text/plain; charset=utf-8",
            "application/x-www-form-urlencoded",
            "application/octet-stream",
            "*/*",
            "application/json, text/plain",
        ] {
            assert_eq!(
                accepted(&[], &[ct], true).check_body(),
                BodyType::NotAcceptable(format!("Content-Type header [{ct}] is not supported")),
            );
        }
        assert_eq!(
            accepted(&[], &["application/json; charset=latin1"], true).check_body(),
            BodyType::Json
        );
        assert_eq!(
            accepted(&[], &["application/x-ndjson"], true).check_body(),
            BodyType::Json
        );
        assert_eq!(
            accepted(&[], &["application/yaml"], true).check_body(),
            BodyType::NonJson
        );
        assert_eq!(
            accepted(&[], &["application/vnd.elasticsearch+smile"], true).check_body(),
            BodyType::NonJson
        );
    }

    #[test]
    fn latin1_values() {
        let mut headers = HeaderMap::new();
        headers.append(
            http::header::ACCEPT,
            http::HeaderValue::from_bytes(b"a/b; x=\xC9").expect("value"),
        );
        let values = header_values(&headers, &http::header::ACCEPT);
        assert_eq!(values, ["a/b; x=É"]);
        assert_eq!(parse(&values[0]).params, [("x".to_owned(), "é".to_owned())]);
    }
}
