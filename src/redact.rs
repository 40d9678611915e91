//! What an audit line or a log line may say about a caller or a request, and what it must not:
//! shared by the audit trail, the outermost layer and the upstream service's debug lines.
//!
//! Credentials never reach an audit line or a log: `Authorization`, `Proxy-Authorization` and
//! `Cookie` are never copied, and the only thing taken from `Authorization` is who the caller is
//! (the Basic user name, or the id half of an API key, which Elasticsearch itself shows in its
//! audit log). Texts that may carry secrets (query strings; connector error messages, which often
//! quote a connection string) go through [`redact_secrets`]. All pure functions.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Who the caller says it is, from its `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The Basic user name or the API key id; `None` for bearer tokens and unreadable values.
    pub name: Option<String>,
    /// `basic`, `api_key`, `bearer` or `other`.
    pub scheme: &'static str,
}

/// The caller named by an `Authorization` value, without its secret.
pub fn caller(authorization: &[u8]) -> Caller {
    let text = String::from_utf8_lossy(authorization);
    let (scheme, credentials) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    let decoded_left = || {
        let bytes = STANDARD.decode(credentials.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (left, _secret) = text.split_once(':')?;
        Some(left.to_owned())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Caller {
            name: decoded_left(),
            scheme: "basic",
        }
    } else if scheme.eq_ignore_ascii_case("apikey") {
        Caller {
            name: decoded_left(),
            scheme: "api_key",
        }
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Caller {
            name: None,
            scheme: "bearer",
        }
    } else {
        Caller {
            name: None,
            scheme: "other",
        }
    }
}

/// Key names whose values are secrets, compared without case.
const SECRET_KEYS: [&str; 14] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "secret_key",
    "credentials",
];

/// Authorization schemes whose next word is a secret.
const SECRET_SCHEMES: [&str; 3] = ["basic", "bearer", "apikey"];

/// `text` with the secrets it may carry replaced by [`REDACTED`]:
///
/// * the password (or the whole user part, when it has no `:`) of `scheme://user:pass@host`;
/// * the value after `password=`, `token: `, `"secret":"…"` and the other secret key names;
/// * the credentials after `Basic `, `Bearer ` and `ApiKey `.
///
/// Borrowed when there is nothing to redact.
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    let mut spans = Vec::new();
    url_credentials(text, &mut spans);
    key_values(text, &mut spans);
    scheme_tokens(text, &mut spans);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if end <= at {
            continue;
        }
        let start = start.max(at);
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Where a value ends: white space, quotes, and the separators of query strings, lists and URLs.
fn value_end(text: &str, start: usize) -> usize {
    text[start..]
        .find(|c: char| c.is_whitespace() || "\"'&;,)}]>".contains(c))
        .map_or(text.len(), |i| start + i)
}

/// The secret part of each `scheme://userinfo@` in `text`.
fn url_credentials(text: &str, spans: &mut Vec<(usize, usize)>) {
    let mut from = 0;
    while let Some(i) = text[from..].find("://") {
        let start = from + i + 3;
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || "/?#\"'<>".contains(c))
            .map_or(text.len(), |i| start + i);
        if let Some(at) = text[start..end].rfind('@') {
            let userinfo = &text[start..start + at];
            match userinfo.find(':') {
                Some(colon) => spans.push((start + colon + 1, start + at)),
                None if !userinfo.is_empty() => spans.push((start, start + at)),
                None => {}
            }
        }
        from = start;
    }
}

/// Where each of `words` starts a word of `lower` (not preceded by a character `joins`),
/// with the index just after it.
fn word_starts<'a>(lower: &'a str, words: &'a [&'a str], joins: fn(char) -> bool) -> impl Iterator<Item = usize> + 'a {
    words.iter().flat_map(move |word| {
        lower
            .match_indices(word)
            .filter(move |(start, _)| !lower[..*start].chars().next_back().is_some_and(joins))
            .map(move |(start, _)| start + word.len())
    })
}

/// The value of each `<secret key>=value`, `<secret key>: value` or `"<secret key>":"value"`.
fn key_values(text: &str, spans: &mut Vec<(usize, usize)>) {
    let lower = text.to_ascii_lowercase();
    let joins = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    for from in word_starts(&lower, &SECRET_KEYS, joins) {
        let rest = &lower[from..];
        let after_quote = rest.strip_prefix(['"', '\'']).unwrap_or(rest);
        let trimmed = after_quote.trim_start_matches([' ', '\t']);
        let Some(value) = trimmed.strip_prefix(['=', ':']) else {
            continue;
        };
        let value = value.trim_start_matches([' ', '\t']);
        let mut value_start = lower.len() - value.len();
        if value.starts_with(['"', '\'']) {
            value_start += 1;
        }
        let end = value_end(text, value_start);
        if end > value_start {
            spans.push((value_start, end));
        }
    }
}

/// The word after `Basic `, `Bearer ` or `ApiKey `.
fn scheme_tokens(text: &str, spans: &mut Vec<(usize, usize)>) {
    let lower = text.to_ascii_lowercase();
    for from in word_starts(&lower, &SECRET_SCHEMES, |c| c.is_ascii_alphanumeric()) {
        if !lower[from..].starts_with(' ') {
            continue;
        }
        let token_start = from + 1;
        let end = text[token_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || "+/=._-~".contains(c)))
            .map_or(text.len(), |i| token_start + i);
        // A word long enough to be a credential, not prose ("basic auth").
        if end - token_start >= 8 {
            spans.push((token_start, end));
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary, and whether it was cut.
pub fn truncate(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn callers_are_named_without_their_secret() {
        let basic = format!("Basic {}", b64("elastic:changeme"));
        assert_eq!(
            caller(basic.as_bytes()),
            Caller {
                name: Some("elastic".into()),
                scheme: "basic"
            }
        );
        let key = format!("ApiKey {}", b64("VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw"));
        assert_eq!(caller(key.as_bytes()).name.as_deref(), Some("VuaCfGcBCdbkQm-e5aOx"));
        assert_eq!(caller(key.as_bytes()).scheme, "api_key");
        assert_eq!(caller(b"Bearer abc.def.ghi").name, None);
        assert_eq!(caller(b"Basic !!!notbase64").name, None);
        assert_eq!(caller(b"Negotiate xyz").scheme, "other");
        assert_eq!(caller(&[0xff, 0xfe]).name, None);
    }

    #[test]
    fn url_credentials_are_masked() {
        assert_eq!(
            redact_secrets("cannot connect to postgres://app:s3cr3t@db:5432/x"),
            "cannot connect to postgres://app:[REDACTED]@db:5432/x"
        );
        assert_eq!(
            redact_secrets("clone https://ghp_tokentoken@github.com/o/r failed"),
            "clone https://[REDACTED]@github.com/o/r failed"
        );
        assert_eq!(
            redact_secrets("see https://example.com/a@b"),
            "see https://example.com/a@b"
        );
    }

    #[test]
    fn key_values_are_masked() {
        assert_eq!(
            redact_secrets("login failed: user=bob password=hunter2; retrying"),
            "login failed: user=bob password=[REDACTED]; retrying"
        );
        assert_eq!(redact_secrets("Password: 'p w'"), "Password: '[REDACTED] w'");
        assert_eq!(
            redact_secrets(r#"{"api_key":"abc123","x":1}"#),
            r#"{"api_key":"[REDACTED]","x":1}"#
        );
        assert_eq!(redact_secrets("?a=1&token=zz&b=2"), "?a=1&token=[REDACTED]&b=2");
        assert_eq!(redact_secrets("passwordless login"), "passwordless login");
        assert_eq!(redact_secrets("no_password=x"), "no_password=x");
    }

    #[test]
    fn authorization_values_are_masked() {
        assert_eq!(
            redact_secrets("header Authorization: Bearer eyJhbGciOi.x.y was refused"),
            "header Authorization: Bearer [REDACTED] was refused"
        );
        assert_eq!(redact_secrets("basic auth failed"), "basic auth failed");
    }

    #[test]
    fn clean_text_is_borrowed() {
        assert!(matches!(redact_secrets("Connection timed out"), Cow::Borrowed(_)));
        assert!(matches!(redact_secrets("ünïcode ☃ password"), Cow::Borrowed(_)));
        assert_eq!(redact_secrets("ü password=é€ x"), "ü password=[REDACTED] x");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("abc", 5), ("abc", false));
        assert_eq!(truncate("abcdef", 3), ("abc", true));
        assert_eq!(truncate("a€b", 2), ("a", true));
        assert_eq!(truncate("€", 0), ("", true));
    }
}
