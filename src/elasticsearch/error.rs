//! The errors the connector-error layer answers, as Elasticsearch builds them: a chain of
//! exceptions (outermost first), one of which is the root cause, rendered in Elasticsearch's
//! "detailed" JSON format (`docs/connector-error.md`, "Response headers and formats").

use super::json::{write_json_string, write_json_wtf8};

/// One exception of a chain: its snake_case type and its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `x_content_parse_exception`, `json_parse_exception`, …
    pub error_type: &'static str,
    /// The message, exactly as Elasticsearch prints it, in WTF-8: a Java string may hold lone
    /// surrogates (an unknown field named `"\ud800"`), which `str` cannot.
    pub reason: Vec<u8>,
    /// Fields an exception adds after `type` and `reason` (a `CircuitBreakingException`'s
    /// `bytes_wanted`, `bytes_limit`, `durability`), in order.
    pub fields: Vec<(&'static str, Field)>,
}

/// The value of an extra field of an exception.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// A JSON number.
    Number(u64),
    /// A JSON string.
    Text(&'static str),
}

/// An error answer in Elasticsearch's detailed format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EsError {
    /// HTTP status (400 for every body error).
    pub status: u16,
    /// The exception, then its `caused_by`, then that one's, and so on. Never empty.
    pub chain: Vec<Cause>,
    /// Index in `chain` of the exception shown as `root_cause`.
    pub root: usize,
}

impl EsError {
    /// A 400 with a single exception, which is its own root cause.
    pub fn bad_request(error_type: &'static str, reason: impl Into<Vec<u8>>) -> Self {
        Self::new(400, error_type, reason)
    }

    /// An error of `status` with a single exception, which is its own root cause.
    pub fn new(status: u16, error_type: &'static str, reason: impl Into<Vec<u8>>) -> Self {
        EsError {
            status,
            chain: vec![Cause {
                error_type,
                reason: reason.into(),
                fields: Vec::new(),
            }],
            root: 0,
        }
    }

    /// Adds fields to the top-level exception (written after its `type` and `reason`).
    pub fn with_fields(mut self, fields: Vec<(&'static str, Field)>) -> Self {
        if let Some(top) = self.chain.first_mut() {
            top.fields = fields;
        }
        self
    }

    /// Appends a `caused_by` at the end of the chain.
    pub fn caused_by(mut self, error_type: &'static str, reason: impl Into<Vec<u8>>) -> Self {
        self.chain.push(Cause {
            error_type,
            reason: reason.into(),
            fields: Vec::new(),
        });
        self
    }

    /// Makes the exception at `index` the root cause.
    pub fn with_root(mut self, index: usize) -> Self {
        self.root = index.min(self.chain.len().saturating_sub(1));
        self
    }

    /// The top-level exception.
    pub fn top(&self) -> &Cause {
        &self.chain[0]
    }

    /// The compact body, byte for byte as Elasticsearch writes it.
    pub fn to_compact(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"{\"error\":{\"root_cause\":[{");
        let root = &self.chain[self.root.min(self.chain.len() - 1)];
        write_fields(&mut out, root);
        out.extend_from_slice(b"}],");
        write_chain(&mut out, &self.chain);
        out.extend_from_slice(b"},\"status\":");
        out.extend_from_slice(self.status.to_string().as_bytes());
        out.push(b'}');
        out
    }
}

fn write_fields(out: &mut Vec<u8>, cause: &Cause) {
    out.extend_from_slice(b"\"type\":");
    write_json_string(out, cause.error_type);
    out.extend_from_slice(b",\"reason\":");
    write_json_wtf8(out, &cause.reason);
    for (name, value) in &cause.fields {
        out.push(b',');
        write_json_string(out, name);
        out.push(b':');
        match value {
            Field::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Field::Text(t) => write_json_string(out, t),
        }
    }
}

fn write_chain(out: &mut Vec<u8>, chain: &[Cause]) {
    let Some((first, rest)) = chain.split_first() else {
        return;
    };
    write_fields(out, first);
    if !rest.is_empty() {
        out.extend_from_slice(b",\"caused_by\":{");
        write_chain(out, rest);
        out.push(b'}');
    }
}

/// A local answer: its status, Elasticsearch error type and reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status (400, 406, 413, …).
    pub status: u16,
    /// The error's `type`; `None` for Elasticsearch's simple format (`{"error":"…","status":N}`).
    pub error_type: Option<&'static str>,
    /// The error's `reason` (lossy UTF-8).
    pub reason: String,
}

impl Rejection {
    /// The rejection for `error` (its top-level exception).
    pub fn from_error(error: &EsError) -> Self {
        let top = error.top();
        Rejection {
            status: error.status,
            error_type: Some(top.error_type),
            reason: String::from_utf8_lossy(&top.reason).into_owned(),
        }
    }

    /// A rejection in the simple format.
    pub fn simple(status: u16, text: &[u8]) -> Self {
        Rejection {
            status,
            error_type: None,
            reason: String::from_utf8_lossy(text).into_owned(),
        }
    }

    /// The label this rejection is counted under: its error type, or `simple_<status>`.
    pub fn label(&self) -> &'static str {
        match (self.error_type, self.status) {
            (Some(t), _) => t,
            (None, 406) => "simple_406",
            (None, 400) => "simple_400",
            (None, _) => "simple",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_with_caused_by_and_inner_root() {
        let e = EsError::bad_request(
            "x_content_parse_exception",
            "[1:10] [connector_update_error_request] failed to parse field [error]",
        )
        .caused_by("x_content_e_o_f_exception", "[1:12] Unexpected end of file")
        .caused_by("json_e_o_f_exception", "Unexpected end-of-input in VALUE_STRING")
        .with_root(1);
        assert_eq!(
            String::from_utf8_lossy(&e.to_compact()),
            r#"{"error":{"root_cause":[{"type":"x_content_e_o_f_exception","reason":"[1:12] Unexpected end of file"}],"type":"x_content_parse_exception","reason":"[1:10] [connector_update_error_request] failed to parse field [error]","caused_by":{"type":"x_content_e_o_f_exception","reason":"[1:12] Unexpected end of file","caused_by":{"type":"json_e_o_f_exception","reason":"Unexpected end-of-input in VALUE_STRING"}}},"status":400}"#
        );
    }
}
