//! Reads a connector-error body the way Elasticsearch reads it: Jackson's UTF-8 stream parser with
//! comments allowed and strict duplicate detection, driven by the `connector_update_error_request`
//! object parser, with Elasticsearch's wrapping of Jackson's exceptions.
//!
//! This is not a general JSON parser. It follows, step by step, the calls Elasticsearch makes
//! (`nextToken`, `nextFieldName`, `getText`) and reproduces Jackson's messages, their `[line:col]`
//! locations (columns count bytes) and the `[Source: (byte[])"…"]` snippets, because a client must
//! not be able to tell esgate's 400 from Elasticsearch's. Like Jackson it reads lazily: a string
//! value is decoded only when its text is asked for, and nothing after the root object is read.
//!
//! What differs between dialects is asked of two tables, never of version numbers: the wrapping
//! state ([`Wrapping`]) and the jackson-core family's [`JacksonRules`]
//! (`docs/dialects.md`, "Wrapping" and "Jackson").

use bytes::Bytes;

use super::dialect::{Dialect, JacksonRules, Wrapping};
use super::error::EsError;
use super::java::{is_java_identifier_part, is_java_identifier_start, java_utf8_lossy};
use super::json::push_unicode_escape;
use super::suggest::field_suggestion;

/// The name Elasticsearch gives the body's object parser; it prefixes most messages.
const PARSER: &str = "connector_update_error_request";

/// How much of the body Jackson quotes in an error message.
const SNIPPET_BYTES: usize = 500;

/// Longest token Jackson quotes in "Unrecognized token" before cutting it with `...`.
const MAX_ERROR_TOKEN: usize = 256;

/// Jackson's limit on the characters of a number, which Elasticsearch keeps.
const MAX_NUMBER_LEN: usize = 1000;

/// Why a body is forwarded unchecked.
pub(crate) mod unchecked {
    /// Jackson detects UTF-16 and UTF-32 and reads them with another parser, whose locations
    /// count characters; whether Elasticsearch hands such bodies to Jackson intact is unverified.
    pub(crate) const WIDE_ENCODING: &str = "the body is UTF-16 or UTF-32, which Jackson reads with another parser";
    /// Jackson looks names up in a symbol table shared by all requests, keyed by 4-byte groups
    /// padded with 0xFF bytes: a name holding byte 0xFF may match a name seen before (in any
    /// earlier request), so Elasticsearch's answer depends on its history.
    pub(crate) const FF_IN_NAME: &str =
        "a field name holds byte 0xFF, which Jackson may match to a name it saw earlier";
    /// Before elastic/elasticsearch#123439 Jackson's number-length limit escapes Elasticsearch's
    /// handling as an exception of its own, whose answer is not modelled.
    pub(crate) const UNCAUGHT: &str =
        "the body hits a Jackson limit that this Elasticsearch version does not turn into a 400";
}

/// Texts that name what Jackson expected.
pub(crate) mod texts {
    /// After `Unrecognized token '…': was expecting `.
    pub(crate) const VALID_TOKENS: &str = "(JSON String, Number, Array, Object or token 'null', 'true' or 'false')";
    /// After `expected a valid value `.
    pub(crate) const VALID_VALUES: &str = "(JSON String, Number, Array, Object or token 'null', 'true' or 'false')";
}

/// What Elasticsearch does with a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyVerdict {
    /// Accepted. `literal` is the `error` value as a JSON literal, written the way Elasticsearch
    /// writes strings (`null`, or a string with Jackson's escaping); the canonical body is
    /// `{"error":<literal>}`.
    Accept {
        /// `null` or a JSON string literal.
        literal: Bytes,
    },
    /// Rejected with this 400.
    Reject(EsError),
    /// esgate cannot tell what Elasticsearch would answer: forward the body unchanged.
    Unchecked(&'static str),
}

impl BodyVerdict {
    /// The canonical body for an accepted one: `{"error":<literal>}`.
    pub fn canonical_body(literal: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(literal.len() + 10);
        out.extend_from_slice(b"{\"error\":");
        out.extend_from_slice(literal);
        out.push(b'}');
        Bytes::from(out)
    }
}

/// Checks one body as `dialect` reads it. See [`super::body::check_body`].
pub(crate) fn check(body: &[u8], dialect: Dialect) -> BodyVerdict {
    if body.is_empty() {
        return BodyVerdict::Reject(EsError::bad_request("parse_exception", "request body is required"));
    }
    if let Some(literal) = canonical_literal(body) {
        return BodyVerdict::Accept {
            literal: Bytes::copy_from_slice(literal),
        };
    }
    let start = match detect_encoding(body) {
        Encoding::Utf8 { bom } => bom,
        Encoding::Other(why) => return BodyVerdict::Unchecked(why),
    };
    let mut parser = Parser::new(body, start, dialect);
    let parsed = parser.parse();
    if let Some(why) = parser.unchecked {
        return BodyVerdict::Unchecked(why);
    }
    match parsed {
        Ok(Some(units)) => {
            let mut literal = Vec::with_capacity(units.len() + 2);
            write_utf16_literal(&mut literal, &units);
            BodyVerdict::Accept {
                literal: Bytes::from(literal),
            }
        }
        Ok(None) => BodyVerdict::Accept {
            literal: Bytes::from_static(b"null"),
        },
        Err(e) => BodyVerdict::Reject(e),
    }
}

/// The common case, decided without the tokenizer: a body that already is canonical,
/// `{"error":"…"}` with only printable ASCII other than `"` and `\` in the value. Jackson reads
/// such a body exactly as written and writes the value back the same, so the literal is the
/// body's own bytes.
pub(crate) fn canonical_literal(body: &[u8]) -> Option<&[u8]> {
    let inner = body.strip_prefix(b"{\"error\":")?.strip_suffix(b"}")?;
    let value = inner.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    plain(value).then_some(inner)
}

/// A byte that Jackson reads and writes as itself inside a string: printable ASCII but `"` and `\`.
fn plain_byte(b: u8) -> bool {
    matches!(b, 0x20..=0x7E) && b != b'"' && b != b'\\'
}

/// Whether every byte of `value` is [`plain_byte`]: eight at a time, since the common error
/// text is all plain and this scan is the main cost of checking it.
fn plain(value: &[u8]) -> bool {
    let mut words = value.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        if !plain_word(u64::from_le_bytes(bytes)) {
            return false;
        }
    }
    words.remainder().iter().all(|b| plain_byte(*b))
}

/// [`plain_byte`] for all eight bytes of `w` at once. `has_less(x, n)` is nonzero exactly when
/// some byte of `x` is below `n` (for `n` up to 128); a byte equal to `c` is a zero byte of
/// `x ^ c`, and so below 1.
fn plain_word(w: u64) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    const fn has_less(x: u64, n: u64) -> u64 {
        x.wrapping_sub(ONES * n) & !x & HIGH
    }
    let special = (w & HIGH)
        | has_less(w, 0x20)
        | has_less(w ^ (ONES * 0x7F), 1)
        | has_less(w ^ (ONES * u64::from(b'"')), 1)
        | has_less(w ^ (ONES * u64::from(b'\\')), 1);
    special == 0
}

// ===== encoding detection (Jackson's ByteSourceJsonBootstrapper) =====

enum Encoding {
    /// UTF-8; the BOM length to skip.
    Utf8 { bom: usize },
    /// UTF-16 or UTF-32 (or an odd UCS-4 order): read by another Jackson parser.
    Other(&'static str),
}

fn detect_encoding(b: &[u8]) -> Encoding {
    const WIDE: Encoding = Encoding::Other(unchecked::WIDE_ENCODING);
    if b.len() >= 4 {
        let quad = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        match quad {
            0x0000_FEFF | 0xFFFE_0000 | 0x0000_FFFE | 0xFEFF_0000 => return WIDE,
            _ => {}
        }
        if quad >> 16 == 0xFEFF || quad >> 16 == 0xFFFE {
            return WIDE;
        }
        if quad >> 8 == 0x00EF_BBBF {
            return Encoding::Utf8 { bom: 3 };
        }
        // checkUTF32, then checkUTF16 on the first two bytes. Java's `>>` on an int is signed,
        // so `quad >> 8 == 0` needs the top byte below 0x80 as well.
        if (quad as i32) >> 8 == 0 || quad & 0x00FF_FFFF == 0 || quad & !0x00FF_0000 == 0 || quad & !0x0000_FF00 == 0 {
            return WIDE;
        }
        let i16 = quad >> 16;
        if i16 & 0xFF00 == 0 || i16 & 0x00FF == 0 {
            return WIDE;
        }
    } else if b.len() >= 2 {
        let i16 = u32::from(b[0]) << 8 | u32::from(b[1]);
        if i16 & 0xFF00 == 0 || i16 & 0x00FF == 0 {
            return WIDE;
        }
    }
    Encoding::Utf8 { bom: 0 }
}

// ===== Jackson's exceptions and Elasticsearch's wrapping =====

/// A Jackson exception, before Elasticsearch wraps it.
#[derive(Debug)]
struct JacksonError {
    kind: Kind,
    /// The message without the location suffix, in WTF-8.
    msg: Vec<u8>,
    loc: Option<Loc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `JsonParseException`.
    Parse,
    /// `JsonEOFException`.
    Eof,
    /// `StreamConstraintsException` (the number-length limit).
    Constraints,
}

/// A 1-based line and column (columns count bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    line: u32,
    col: i64,
}

impl Loc {
    fn prefix(self) -> String {
        format!("[{}:{}] ", self.line, self.col)
    }
}

type JResult<T> = Result<T, JacksonError>;

// ===== the parser =====

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    StartObject,
    StartArray,
    EndObject,
    FieldName,
    String,
    NumberInt,
    NumberFloat,
    True,
    False,
    Null,
}

impl Tok {
    /// `JsonToken.name()`, as in `" in " + _currToken`.
    fn name(self) -> &'static str {
        match self {
            Tok::StartObject => "START_OBJECT",
            Tok::StartArray => "START_ARRAY",
            Tok::EndObject => "END_OBJECT",
            Tok::FieldName => "FIELD_NAME",
            Tok::String => "VALUE_STRING",
            Tok::NumberInt => "VALUE_NUMBER_INT",
            Tok::NumberFloat => "VALUE_NUMBER_FLOAT",
            Tok::True => "VALUE_TRUE",
            Tok::False => "VALUE_FALSE",
            Tok::Null => "VALUE_NULL",
        }
    }

    /// The name Elasticsearch's object parser prints (`XContentParser.Token`).
    fn es_name(tok: Option<Tok>) -> &'static str {
        match tok {
            None => "null",
            Some(Tok::NumberInt | Tok::NumberFloat) => "VALUE_NUMBER",
            Some(Tok::True | Tok::False) => "VALUE_BOOLEAN",
            Some(t) => t.name(),
        }
    }
}

/// The parsing context: the root, or the root object (the parser never goes deeper).
#[derive(Clone, Copy)]
enum Context {
    Root { index: i32 },
    Object { start: Loc, index: i32 },
}

struct Parser<'a> {
    buf: &'a [u8],
    ptr: usize,
    row: u32,
    row_start: usize,
    tok_row: u32,
    /// `ptr - row_start` right after the token's first byte: its 1-based column.
    tok_col: i64,
    name_row: u32,
    name_col: i64,
    ctx: Context,
    cur: Option<Tok>,
    next: Option<Tok>,
    incomplete: bool,
    /// Field names seen in the root object, for duplicate detection.
    names: Vec<Vec<u16>>,
    /// Set when the body turns out to be one esgate cannot judge.
    unchecked: Option<&'static str>,
    /// How Elasticsearch wraps Jackson's exceptions.
    wrapping: Wrapping,
    /// What this Jackson family does differently.
    rules: &'static JacksonRules,
}

/// The `JsonXContentParser` method an exception came out of: in the wrapping states before
/// elastic/elasticsearch#123439 each wraps differently.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    NextToken,
    NextFieldName,
    Text,
}

impl<'a> Parser<'a> {
    fn new(buf: &'a [u8], start: usize, dialect: Dialect) -> Self {
        Parser {
            buf,
            ptr: start,
            row: 1,
            // Columns count from the first byte of the body, a BOM included.
            row_start: 0,
            tok_row: 1,
            tok_col: 0,
            name_row: 1,
            name_col: 0,
            ctx: Context::Root { index: -1 },
            cur: None,
            next: None,
            incomplete: false,
            names: Vec::new(),
            unchecked: None,
            wrapping: dialect.wrapping(),
            rules: dialect.jackson().rules(),
        }
    }

    // ----- the object parser (Elasticsearch's ObjectParser over `connector_update_error_request`)

    /// `Ok(Some(units))` for a string value, `Ok(None)` for null.
    fn parse(&mut self) -> Result<Option<Vec<u16>>, EsError> {
        let first = self.next_token().map_err(|e| self.wrap(e, Step::NextToken))?;
        if first != Some(Tok::StartObject) {
            let loc = self.token_location();
            return Err(self.es_parse_error(
                loc,
                format!("[{PARSER}] Expected START_OBJECT but was: {}", Tok::es_name(first)).into_bytes(),
            ));
        }
        let mut value: Option<Option<Vec<u16>>> = None;
        while let Some(name) = self.next_field_name().map_err(|e| self.wrap(e, Step::NextFieldName))? {
            let name_loc = self.token_location();
            let tok = self.next_token().map_err(|e| self.wrap(e, Step::NextToken))?;
            if name != ERROR_FIELD {
                let mut msg = format!("[{PARSER}] unknown field [").into_bytes();
                push_utf16_as_wtf8(&mut msg, &name);
                msg.push(b']');
                msg.extend_from_slice(field_suggestion(&name, &["error"]).as_bytes());
                return Err(self.es_parse_error(name_loc, msg));
            }
            let value_loc = self.token_location();
            match tok {
                Some(Tok::Null) => {
                    if value.is_none() {
                        value = Some(None);
                    }
                }
                Some(Tok::String) => {
                    let text = self.text().map_err(|e| {
                        let outer = EsError::bad_request(
                            "x_content_parse_exception",
                            format!("{}[{PARSER}] failed to parse field [error]", value_loc.prefix()),
                        );
                        if self.wrapping == Wrapping::B0 {
                            // `text()` does not wrap: Jackson's exception is the cause, and the
                            // object parser's own exception the root.
                            let cause = if e.kind == Kind::Eof {
                                "json_e_o_f_exception"
                            } else {
                                "json_parse_exception"
                            };
                            return outer.caused_by(cause, self.full_message(&e));
                        }
                        let inner = self.wrap(e, Step::Text);
                        let mut outer = outer;
                        outer.chain.extend(inner.chain);
                        outer.with_root(1)
                    })?;
                    if value.is_none() {
                        value = Some(Some(text));
                    }
                }
                other => {
                    return Err(self.es_parse_error(
                        value_loc,
                        format!(
                            "[{PARSER}] error doesn't support values of type: {}",
                            Tok::es_name(other)
                        )
                        .into_bytes(),
                    ))
                }
            }
        }
        match value {
            Some(v) => Ok(v),
            None => Err(EsError::bad_request("illegal_argument_exception", "Required [error]")),
        }
    }

    /// An `XContentParseException` of Elasticsearch's own, at `loc`.
    fn es_parse_error(&self, loc: Loc, msg: Vec<u8>) -> EsError {
        let mut reason = loc.prefix().into_bytes();
        reason.extend_from_slice(&msg);
        EsError::bad_request("x_content_parse_exception", reason)
    }

    /// How `JsonXContentParser` wraps Jackson's exception `e`, thrown by `step`
    /// (`docs/dialects.md`, "Wrapping"). In state C one handler serves every method
    /// (`handleParserException`); before it, only `nextToken` turns an end of input into
    /// `Unexpected end of file`, and nothing turns the number-length limit into a 400, so such a
    /// body is forwarded unchecked.
    fn wrap(&mut self, e: JacksonError, step: Step) -> EsError {
        let full = self.full_message(&e);
        let prefix = e.loc.map(Loc::prefix).unwrap_or_default();
        let state_c = self.wrapping == Wrapping::C;
        match e.kind {
            Kind::Constraints if !state_c => {
                self.unchecked = Some(unchecked::UNCAUGHT);
                EsError::bad_request("unchecked", full)
            }
            Kind::Eof if !state_c && step != Step::NextToken => {
                let mut reason = prefix.into_bytes();
                reason.extend_from_slice(&full);
                EsError::bad_request("x_content_parse_exception", reason).caused_by("json_e_o_f_exception", full)
            }
            Kind::Eof => EsError::bad_request("x_content_e_o_f_exception", format!("{prefix}Unexpected end of file"))
                .caused_by("json_e_o_f_exception", full),
            Kind::Parse => {
                let mut reason = prefix.into_bytes();
                reason.extend_from_slice(&full);
                EsError::bad_request("x_content_parse_exception", reason).caused_by("json_parse_exception", full)
            }
            Kind::Constraints => EsError::bad_request("x_content_parse_exception", full.clone())
                .caused_by("stream_constraints_exception", full),
        }
    }

    /// `JsonProcessingException.getMessage()`: the message, then `\n at ` and the location.
    fn full_message(&self, e: &JacksonError) -> Vec<u8> {
        let mut out = e.msg.clone();
        if let Some(loc) = e.loc {
            out.extend_from_slice(b"\n at ");
            self.location_text(&mut out, loc);
        }
        out
    }

    /// `JsonLocation.toString()`: `[Source: (byte[])"…"; line: L, column: C]`.
    fn location_text(&self, out: &mut Vec<u8>, loc: Loc) {
        out.extend_from_slice(b"[Source: (byte[])\"");
        let take = self.buf.len().min(SNIPPET_BYTES);
        for ch in java_utf8_lossy(&self.buf[..take]).chars() {
            let c = ch as u32;
            let iso_control = c < 0x20 || (0x7F..=0x9F).contains(&c);
            if iso_control && ch != '\r' && ch != '\n' {
                push_unicode_escape(out, c as u16);
            } else {
                let mut tmp = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
            }
        }
        out.push(b'"');
        if self.buf.len() > SNIPPET_BYTES {
            out.extend_from_slice(format!("[truncated {} bytes]", self.buf.len() - SNIPPET_BYTES).as_bytes());
        }
        out.extend_from_slice(format!("; line: {}, column: {}]", loc.line, loc.col).as_bytes());
    }

    // ----- locations

    fn current_location(&self) -> Loc {
        Loc {
            line: self.row,
            col: self.ptr as i64 - self.row_start as i64 + 1,
        }
    }

    fn location_minus_one(&self) -> Loc {
        Loc {
            line: self.row,
            col: self.ptr as i64 - self.row_start as i64,
        }
    }

    fn token_location(&self) -> Loc {
        if self.cur == Some(Tok::FieldName) {
            Loc {
                line: self.name_row,
                col: self.name_col,
            }
        } else {
            Loc {
                line: self.tok_row,
                col: self.tok_col,
            }
        }
    }

    fn update_location(&mut self) {
        self.tok_row = self.row;
        self.tok_col = self.ptr as i64 - self.row_start as i64;
    }

    fn update_name_location(&mut self) {
        self.name_row = self.row;
        self.name_col = self.ptr as i64 - self.row_start as i64;
    }

    // ----- errors, as ParserMinimalBase builds them

    fn error_at(&self, msg: impl Into<Vec<u8>>, loc: Loc) -> JacksonError {
        JacksonError {
            kind: Kind::Parse,
            msg: msg.into(),
            loc: Some(loc),
        }
    }

    /// `_reportError`: located where the parser stands.
    fn report_error(&self, msg: impl Into<Vec<u8>>) -> JacksonError {
        self.error_at(msg, self.current_location())
    }

    fn unexpected_char(&self, ch: i32, comment: &str) -> JacksonError {
        let tail = if comment.is_empty() {
            ")".to_owned()
        } else {
            format!("): {comment}")
        };
        self.error_at(
            char_message("Unexpected character (", ch, &tail),
            self.location_minus_one(),
        )
    }

    fn unexpected_number_char(&self, ch: i32, comment: &str) -> JacksonError {
        let tail = format!(") in numeric value: {comment}");
        self.error_at(
            char_message("Unexpected character (", ch, &tail),
            self.location_minus_one(),
        )
    }

    fn invalid_eof(&self, suffix: &str) -> JacksonError {
        JacksonError {
            kind: Kind::Eof,
            msg: format!("Unexpected end-of-input{suffix}").into_bytes(),
            loc: Some(self.current_location()),
        }
    }

    /// `_loadMoreGuaranteed()` at the end of the input: `" in " + _currToken`.
    fn eof_in_current(&self) -> JacksonError {
        self.invalid_eof(&format!(" in {}", self.cur.map(Tok::name).unwrap_or("null")))
    }

    fn invalid_space(&self, c: i32) -> JacksonError {
        let mut tail = String::from("): only regular white space (\\r, \\n, \\t) is allowed between tokens");
        if c == 0x1E && self.rules.record_separator_hint {
            tail.push_str(
                " (consider enabling `JsonReadFeature.ALLOW_RS_CONTROL_CHAR` to allow use of Record Separators (\\u001E))",
            );
        }
        self.error_at(char_message("Illegal character (", c, &tail), self.current_location())
    }

    fn unquoted_space(&self, c: i32, what: &str) -> JacksonError {
        let tail = format!("): has to be escaped using backslash to be included in {what}");
        self.error_at(
            char_message("Illegal unquoted character (", c, &tail),
            self.location_minus_one(),
        )
    }

    fn invalid_initial(&self, b: u8) -> JacksonError {
        self.report_error(format!("Invalid UTF-8 start byte 0x{b:x}"))
    }

    fn invalid_other(&self, b: u8) -> JacksonError {
        self.report_error(format!("Invalid UTF-8 middle byte 0x{b:x}"))
    }

    fn invalid_char(&self, c: u8) -> JacksonError {
        if c < 32 {
            self.invalid_space(i32::from(c))
        } else {
            self.invalid_initial(c)
        }
    }

    fn invalid_surrogate(&self, c: u32) -> JacksonError {
        self.report_error(format!("Invalid UTF-8: Illegal surrogate character 0x{c:x}"))
    }

    // ----- input

    fn at_end(&self) -> bool {
        self.ptr >= self.buf.len()
    }

    /// The next byte; at the end of the input, Jackson's `_loadMoreGuaranteed` error.
    #[inline]
    fn next_byte(&mut self) -> JResult<u8> {
        match self.buf.get(self.ptr) {
            Some(b) => {
                self.ptr += 1;
                Ok(*b)
            }
            None => Err(self.eof_in_current()),
        }
    }

    fn skip_cr(&mut self) {
        if self.buf.get(self.ptr) == Some(&b'\n') {
            self.ptr += 1;
        }
        self.row += 1;
        self.row_start = self.ptr;
    }

    /// The next byte that is not white space or part of a comment; `None` at the end of input.
    fn next_significant(&mut self) -> JResult<Option<u8>> {
        while let Some(&c) = self.buf.get(self.ptr) {
            self.ptr += 1;
            match c {
                b'/' => self.skip_comment()?,
                b' ' | b'\t' => {}
                b'\n' => {
                    self.row += 1;
                    self.row_start = self.ptr;
                }
                b'\r' => self.skip_cr(),
                0..=31 => return Err(self.invalid_space(i32::from(c))),
                _ => return Ok(Some(c)),
            }
        }
        Ok(None)
    }

    /// `_skipWSOrEnd`: the next significant byte, or -1 at a legitimate end of input.
    fn skip_ws_or_end(&mut self) -> JResult<i32> {
        match self.next_significant()? {
            Some(c) => Ok(i32::from(c)),
            None => {
                self.handle_eof()?;
                Ok(-1)
            }
        }
    }

    /// `_skipWS`, used after a comma: the end of input is a plain parse error there.
    fn skip_ws(&mut self) -> JResult<i32> {
        match self.next_significant()? {
            Some(c) => Ok(i32::from(c)),
            None => Err(self.report_error(format!(
                "Unexpected end-of-input within/between {} entries",
                self.type_desc()
            ))),
        }
    }

    /// `_skipColon`: past the colon and the white space after it; returns the value's first byte.
    fn skip_colon(&mut self) -> JResult<i32> {
        let mut colon = false;
        loop {
            match self.next_significant()? {
                None => return Err(self.invalid_eof(&format!(" within/between {} entries", self.type_desc()))),
                Some(c) if colon => return Ok(i32::from(c)),
                Some(b':') => colon = true,
                Some(c) => {
                    return Err(
                        self.unexpected_char(i32::from(c), "was expecting a colon to separate field name and value")
                    )
                }
            }
        }
    }

    fn skip_comment(&mut self) -> JResult<()> {
        if self.at_end() {
            return Err(self.invalid_eof(" in a comment"));
        }
        let c = self.buf[self.ptr];
        self.ptr += 1;
        match c {
            b'/' => self.skip_line(),
            b'*' => self.skip_c_comment(),
            _ => Err(self.unexpected_char(i32::from(c), "was expecting either '*' or '/' for a comment")),
        }
    }

    fn skip_line(&mut self) -> JResult<()> {
        while !self.at_end() {
            let c = self.buf[self.ptr];
            self.ptr += 1;
            match comment_code(c) {
                CommentCode::Plain | CommentCode::Star => {}
                CommentCode::Utf8(n) => self.skip_utf8(c, n)?,
                CommentCode::Lf => {
                    self.row += 1;
                    self.row_start = self.ptr;
                    return Ok(());
                }
                CommentCode::Cr => {
                    self.skip_cr();
                    return Ok(());
                }
                CommentCode::Invalid => return Err(self.invalid_char(c)),
            }
        }
        Ok(())
    }

    fn skip_c_comment(&mut self) -> JResult<()> {
        while !self.at_end() {
            let c = self.buf[self.ptr];
            self.ptr += 1;
            match comment_code(c) {
                CommentCode::Plain => {}
                CommentCode::Utf8(n) => self.skip_utf8(c, n)?,
                CommentCode::Lf => {
                    self.row += 1;
                    self.row_start = self.ptr;
                }
                CommentCode::Cr => self.skip_cr(),
                CommentCode::Star => {
                    if self.at_end() {
                        break;
                    }
                    if self.buf[self.ptr] == b'/' {
                        self.ptr += 1;
                        return Ok(());
                    }
                }
                CommentCode::Invalid => return Err(self.invalid_char(c)),
            }
        }
        Err(self.invalid_eof(" in a comment"))
    }

    /// Skips the continuation bytes of a multi-byte character (no value checks, as Jackson).
    fn skip_utf8(&mut self, _lead: u8, len: usize) -> JResult<()> {
        for _ in 1..len {
            let b = self.next_byte()?;
            if b & 0xC0 != 0x80 {
                return Err(self.invalid_other(b));
            }
        }
        Ok(())
    }

    fn handle_eof(&self) -> JResult<()> {
        match self.ctx {
            Context::Root { .. } => Ok(()),
            Context::Object { start, .. } => {
                let mut msg = b"Unexpected end-of-input: expected close marker for Object (start marker at ".to_vec();
                self.location_text(&mut msg, start);
                msg.push(b')');
                Err(JacksonError {
                    kind: Kind::Eof,
                    msg,
                    loc: Some(self.current_location()),
                })
            }
        }
    }

    fn type_desc(&self) -> &'static str {
        match self.ctx {
            Context::Root { .. } => "root",
            Context::Object { .. } => "Object",
        }
    }

    /// `JsonReadContext.expectComma()`: counts entries, true from the second on (not in root).
    fn expect_comma(&mut self) -> bool {
        match &mut self.ctx {
            Context::Root { index } => {
                *index += 1;
                false
            }
            Context::Object { index, .. } => {
                *index += 1;
                *index > 0
            }
        }
    }

    // ----- tokens

    fn next_token(&mut self) -> JResult<Option<Tok>> {
        if self.cur == Some(Tok::FieldName) {
            let tok = self.next.take();
            self.cur = tok;
            return Ok(tok);
        }
        if self.incomplete {
            self.skip_string()?;
        }
        let c = self.skip_ws_or_end()?;
        if c < 0 {
            self.cur = None;
            return Ok(None);
        }
        if c == i32::from(b']') || c == i32::from(b'}') {
            self.update_location();
            return Err(self.close_marker(c));
        }
        // Only the root is read with nextToken; inside the root object names are read with
        // next_field_name.
        self.expect_comma();
        self.update_location();
        let tok = self.value_token(c)?;
        if tok == Tok::StartObject {
            self.ctx = Context::Object {
                start: Loc {
                    line: self.tok_row,
                    col: self.tok_col,
                },
                index: -1,
            };
        }
        self.cur = Some(tok);
        Ok(Some(tok))
    }

    /// A close marker that closes nothing (in the root), or the wrong scope (`]` in the object).
    fn close_marker(&self, c: i32) -> JacksonError {
        let (actual, expected) = if c == i32::from(b']') { (']', '}') } else { ('}', ']') };
        match self.ctx {
            Context::Root { .. } if !self.rules.root_close_marker_has_no_scope => {
                let mut msg =
                    format!("Unexpected close marker '{actual}': expected '{expected}' (for root starting at ")
                        .into_bytes();
                self.location_text(&mut msg, Loc { line: 1, col: 0 });
                msg.push(b')');
                self.error_at(msg, self.location_minus_one())
            }
            Context::Root { .. } => {
                let scope = if actual == ']' { "Array" } else { "Object" };
                self.error_at(
                    format!("Unexpected close marker '{actual}': no open {scope} to close"),
                    self.location_minus_one(),
                )
            }
            Context::Object { start, .. } => {
                let mut msg =
                    format!("Unexpected close marker '{actual}': expected '{expected}' (for Object starting at ")
                        .into_bytes();
                self.location_text(&mut msg, start);
                msg.push(b')');
                self.error_at(msg, self.location_minus_one())
            }
        }
    }

    fn next_field_name(&mut self) -> JResult<Option<Vec<u16>>> {
        if self.incomplete {
            self.skip_string()?;
        }
        let mut c = self.skip_ws_or_end()?;
        if c < 0 {
            self.cur = None;
            return Ok(None);
        }
        if c == i32::from(b']') {
            self.update_location();
            return Err(self.close_marker(c));
        }
        if c == i32::from(b'}') {
            self.update_location();
            self.ctx = Context::Root { index: 0 };
            self.cur = Some(Tok::EndObject);
            return Ok(None);
        }
        if self.expect_comma() {
            if c != i32::from(b',') {
                return Err(self.unexpected_char(c, "was expecting comma to separate Object entries"));
            }
            c = self.skip_ws()?;
        }
        self.update_name_location();
        let name = self.parse_name(c)?;
        if self.names.contains(&name) {
            let mut msg = b"Duplicate field '".to_vec();
            push_utf16_as_wtf8(&mut msg, &name);
            msg.push(b'\'');
            return Err(self.report_error(msg));
        }
        self.names.push(name.clone());
        self.cur = Some(Tok::FieldName);
        let c = self.skip_colon()?;
        self.update_location();
        self.next = Some(self.value_token(c)?);
        Ok(Some(name))
    }

    /// The token a value starts with; literals and numbers are read whole, strings lazily.
    fn value_token(&mut self, c: i32) -> JResult<Tok> {
        let Ok(b) = u8::try_from(c) else {
            return Err(self.unexpected_char(c, "expected a value"));
        };
        match b {
            b'"' => {
                self.incomplete = true;
                Ok(Tok::String)
            }
            b'[' => Ok(Tok::StartArray),
            b'{' => Ok(Tok::StartObject),
            b't' => self.match_literal("true", 1).map(|()| Tok::True),
            b'f' => self.match_literal("false", 1).map(|()| Tok::False),
            b'n' => self.match_literal("null", 1).map(|()| Tok::Null),
            b'-' => self.parse_signed_number(),
            b'0'..=b'9' => self.parse_unsigned_number(b),
            _ => self.unexpected_value(i32::from(b)),
        }
    }

    /// `_handleUnexpectedValue`.
    fn unexpected_value(&mut self, c: i32) -> JResult<Tok> {
        match u8::try_from(c).unwrap_or(0) {
            b',' | b'}' => return Err(self.unexpected_char(c, "expected a value")),
            b']' if matches!(self.ctx, Context::Root { .. }) => {
                return Err(self.unexpected_char(c, "expected a value"));
            }
            b'N' => {
                self.match_literal("NaN", 1)?;
                return Err(self.report_error(
                    "Non-standard token 'NaN': enable `JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS` to allow",
                ));
            }
            b'I' => {
                self.match_literal("Infinity", 1)?;
                return Err(self.report_error(
                    "Non-standard token 'Infinity': enable `JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS` to allow",
                ));
            }
            b'+' => {
                if self.at_end() {
                    return Err(self.invalid_eof(" in a Number value"));
                }
                let next = self.buf[self.ptr];
                self.ptr += 1;
                return self.invalid_number_start(i32::from(next), false);
            }
            _ => {}
        }
        // Jackson 2.21+ decodes a non-ASCII first character before judging it; earlier versions
        // take the byte itself as a Latin-1 character.
        let ch = if c >= 0x80 && self.rules.token_located_at_start {
            self.decode_char_for_error(c as u8)? as i32
        } else {
            c
        };
        // Judged on the whole code point, quoted cut to one UTF-16 unit, as Java does.
        if is_java_identifier_start(ch as u32) {
            let token = char_units(ch);
            return Err(self.invalid_token(&token, texts::VALID_TOKENS));
        }
        Err(self.unexpected_char(ch, &format!("expected a valid value {}", texts::VALID_VALUES)))
    }

    /// `_reportInvalidToken`: reads on while the bytes make identifier characters. Located at the
    /// token's first character from Jackson 2.21, where reading stopped before.
    fn invalid_token(&mut self, matched: &[u16], expected: &str) -> JacksonError {
        let start = self.ptr as i64 - matched.len() as i64;
        let at_start = Loc {
            line: self.row,
            col: start - self.row_start as i64 + 1,
        };
        let mut token: Vec<u16> = matched.to_vec();
        while !self.at_end() {
            let b = self.buf[self.ptr];
            self.ptr += 1;
            let c = match self.decode_char_for_error(b) {
                Ok(c) => c as u16,
                Err(e) => return e,
            };
            if !is_java_identifier_part(c) {
                break;
            }
            token.push(c);
            if token.len() >= MAX_ERROR_TOKEN {
                token.extend("...".encode_utf16());
                break;
            }
        }
        let mut msg = b"Unrecognized token '".to_vec();
        push_utf16_as_wtf8(&mut msg, &token);
        msg.extend_from_slice(b"': was expecting ");
        msg.extend_from_slice(expected.as_bytes());
        let loc = if self.rules.token_located_at_start {
            at_start
        } else {
            self.current_location()
        };
        self.error_at(msg, loc)
    }

    /// `_matchToken2`: the rest of a literal, which must not run on into identifier characters.
    fn match_literal(&mut self, word: &str, from: usize) -> JResult<()> {
        let w = word.as_bytes();
        for i in from..w.len() {
            if self.buf.get(self.ptr) != Some(&w[i]) {
                let matched: Vec<u16> = word[..i].encode_utf16().collect();
                return Err(self.invalid_token(&matched, texts::VALID_TOKENS));
            }
            self.ptr += 1;
        }
        if let Some(&c) = self.buf.get(self.ptr) {
            if c >= b'0' && c != b']' && c != b'}' {
                // `_checkMatchEnd`: a following identifier character makes the whole thing one
                // unrecognized token; anything else is left for the next token.
                if !self.rules.token_located_at_start {
                    // Before Jackson 2.21 the character is decoded without stepping over its
                    // first byte, which is then read again as its own continuation byte.
                    let ch = self.decode_char_for_error(c)? as u16;
                    if is_java_identifier_part(ch) {
                        let matched: Vec<u16> = word.encode_utf16().collect();
                        return Err(self.invalid_token(&matched, texts::VALID_TOKENS));
                    }
                    return Ok(());
                }
                let saved = self.ptr;
                self.ptr += 1;
                let ch = self.decode_char_for_error(c)? as u16;
                if is_java_identifier_part(ch) {
                    let mut matched: Vec<u16> = word.encode_utf16().collect();
                    matched.push(ch);
                    return Err(self.invalid_token(&matched, texts::VALID_TOKENS));
                }
                self.ptr = saved;
            }
        }
        Ok(())
    }

    /// `_decodeCharForError`: decodes a character from its first byte and the bytes at `ptr`.
    fn decode_char_for_error(&mut self, first: u8) -> JResult<u32> {
        if first <= 0x7F {
            return Ok(u32::from(first));
        }
        let Some((bits, needed)) = utf8_lead(first) else {
            return Err(self.invalid_initial(first));
        };
        self.continuation_bytes(bits, needed)
    }

    /// Reads `needed` continuation bytes after a lead byte carrying `bits`; no range checks, as
    /// Jackson makes none.
    fn continuation_bytes(&mut self, mut bits: u32, needed: usize) -> JResult<u32> {
        for _ in 0..needed {
            let d = self.next_byte()?;
            if d & 0xC0 != 0x80 {
                return Err(self.invalid_other(d));
            }
            bits = (bits << 6) | u32::from(d & 0x3F);
        }
        Ok(bits)
    }

    // ----- numbers: read whole, never decoded (Elasticsearch only looks at the token type)

    fn parse_unsigned_number(&mut self, first: u8) -> JResult<Tok> {
        if first == b'0' {
            self.verify_no_leading_zeroes()?;
        }
        self.number_rest(1)
    }

    fn parse_signed_number(&mut self) -> JResult<Tok> {
        let c = self.next_byte()?;
        if c <= b'0' {
            if c != b'0' {
                if c == b'.' {
                    return self.unexpected_value(i32::from(c));
                }
                return self.invalid_number_start(i32::from(c), true);
            }
            self.verify_no_leading_zeroes()?;
        } else if c > b'9' {
            return self.invalid_number_start(i32::from(c), true);
        }
        self.number_rest(1)
    }

    fn verify_no_leading_zeroes(&mut self) -> JResult<()> {
        match self.buf.get(self.ptr) {
            Some(c) if c.is_ascii_digit() => {
                Err(self.report_error("Invalid numeric value: Leading zeroes not allowed"))
            }
            _ => Ok(()),
        }
    }

    /// Digits after the first, then fraction and exponent.
    fn number_rest(&mut self, mut int_len: usize) -> JResult<Tok> {
        loop {
            let Some(&c) = self.buf.get(self.ptr) else {
                return self.reset_number(Tok::NumberInt, int_len);
            };
            self.ptr += 1;
            if c.is_ascii_digit() {
                int_len += 1;
                continue;
            }
            if c == b'.' || c | 0x20 == b'e' {
                return self.parse_fraction(c, int_len);
            }
            self.ptr -= 1;
            if matches!(self.ctx, Context::Root { .. }) {
                self.verify_root_space(c)?;
            }
            return self.reset_number(Tok::NumberInt, int_len);
        }
    }

    fn parse_fraction(&mut self, mut c: u8, int_len: usize) -> JResult<Tok> {
        let mut eof = false;
        let mut fract_len = 0;
        if c == b'.' {
            loop {
                let Some(&next) = self.buf.get(self.ptr) else {
                    eof = true;
                    break;
                };
                self.ptr += 1;
                c = next;
                if !c.is_ascii_digit() {
                    break;
                }
                fract_len += 1;
            }
            if fract_len == 0 {
                return Err(self.unexpected_number_char(i32::from(c), "Decimal point not followed by a digit"));
            }
        }
        let mut exp_len = 0;
        if c | 0x20 == b'e' {
            c = self.next_byte()?;
            if c == b'-' || c == b'+' {
                c = self.next_byte()?;
            }
            while c.is_ascii_digit() {
                exp_len += 1;
                let Some(&next) = self.buf.get(self.ptr) else {
                    eof = true;
                    break;
                };
                self.ptr += 1;
                c = next;
            }
            if exp_len == 0 {
                return Err(self.unexpected_number_char(i32::from(c), "Exponent indicator not followed by a digit"));
            }
        }
        if !eof {
            self.ptr -= 1;
            if matches!(self.ctx, Context::Root { .. }) {
                self.verify_root_space(c)?;
            }
        }
        self.reset_number(Tok::NumberFloat, int_len + fract_len + exp_len)
    }

    fn reset_number(&self, tok: Tok, len: usize) -> JResult<Tok> {
        if len > MAX_NUMBER_LEN {
            return Err(JacksonError {
                kind: Kind::Constraints,
                msg: format!(
                    "Number value length ({len}) exceeds the maximum allowed ({MAX_NUMBER_LEN}, from `StreamReadConstraints.getMaxNumberLength()`)"
                )
                .into_bytes(),
                loc: None,
            });
        }
        Ok(tok)
    }

    fn verify_root_space(&mut self, c: u8) -> JResult<()> {
        self.ptr += 1;
        match c {
            b' ' | b'\t' => Ok(()),
            b'\n' => {
                self.row += 1;
                self.row_start = self.ptr;
                Ok(())
            }
            b'\r' => {
                self.ptr -= 1;
                Ok(())
            }
            _ => Err(self.unexpected_char(i32::from(c), "Expected space separating root-level values")),
        }
    }

    /// `_handleInvalidNumberStart`: `-`/`+` followed by something that starts no number.
    fn invalid_number_start(&mut self, mut c: i32, negative: bool) -> JResult<Tok> {
        if c == i32::from(b'I') {
            let Some(&b) = self.buf.get(self.ptr) else {
                return Err(self.invalid_eof(" in a Number value"));
            };
            self.ptr += 1;
            // Jackson reads this byte signed.
            c = i32::from(b as i8);
            let word = match (b, negative) {
                (b'N', true) => Some("-INF"),
                (b'N', false) => Some("+INF"),
                (b'n', true) => Some("-Infinity"),
                (b'n', false) => Some("+Infinity"),
                _ => None,
            };
            if let Some(word) = word {
                self.match_literal(word, 3)?;
                return Err(self.report_error(format!(
                    "Non-standard token '{word}': enable `JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS` to allow"
                )));
            }
        }
        if !negative {
            return Err(self.unexpected_number_char(
                i32::from(b'+'),
                "JSON spec does not allow numbers to have plus signs: enable `JsonReadFeature.ALLOW_LEADING_PLUS_SIGN_FOR_NUMBERS` to allow",
            ));
        }
        Err(self.unexpected_number_char(c, "expected digit (0-9) to follow minus sign, for valid numeric value"))
    }

    // ----- names

    fn parse_name(&mut self, c: i32) -> JResult<Vec<u16>> {
        if c != i32::from(b'"') {
            // Neither unquoted nor single-quoted names are enabled.
            let first = u8::try_from(c).unwrap_or(0);
            let ch = self.decode_char_for_error(first)?;
            return Err(self.unexpected_char((ch as u16).into(), "was expecting double-quote to start field name"));
        }
        if self.at_end() {
            return Err(self.invalid_eof(": was expecting closing '\"' for name"));
        }
        let mut bytes = Vec::new();
        loop {
            let Some(&c) = self.buf.get(self.ptr) else {
                return Err(self.invalid_eof(" in field name"));
            };
            self.ptr += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let mut ch = u32::from(self.decode_escaped()?);
                    if !self.rules.refuses_surrogates {
                        // Each escape is re-encoded on its own, a surrogate as three bytes.
                    } else if (0xD800..=0xDBFF).contains(&ch) {
                        let Some(&next) = self.buf.get(self.ptr) else {
                            return Err(self.invalid_eof(" in field name"));
                        };
                        if next != b'\\' {
                            return Err(self.report_error(format!(
                                "Broken surrogate pair in field name: expected '\\' to start low surrogate, got 0x{next:x}"
                            )));
                        }
                        self.ptr += 1;
                        let low = u32::from(self.decode_escaped()?);
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(self.report_error(format!(
                                "Broken surrogate pair in field name: expected low surrogate, got 0x{low:04X}"
                            )));
                        }
                        ch = 0x10000 + ((ch - 0xD800) << 10) + (low - 0xDC00);
                    } else if (0xDC00..=0xDFFF).contains(&ch) {
                        return Err(self.report_error(format!("Unexpected low surrogate in field name: 0x{ch:x}")));
                    }
                    push_code_point_utf8(&mut bytes, ch);
                }
                0..=31 => return Err(self.unquoted_space(i32::from(c), "name")),
                _ => bytes.push(c),
            }
        }
        if bytes.contains(&0xFF) {
            self.unchecked = Some(unchecked::FF_IN_NAME);
            return Err(self.report_error("unchecked"));
        }
        self.decode_name(&bytes)
    }

    /// `addName`: the name's bytes decoded as UTF-8, checked only as far as Jackson checks them.
    ///
    /// Jackson holds names as big-endian quads of bytes and, for the second and third byte of a
    /// sequence, reports the quad shifted down to that byte, higher bytes and sign included.
    fn decode_name(&self, bytes: &[u8]) -> JResult<Vec<u16>> {
        let quad_view = |ix: usize| -> i32 {
            let mut q = [0u8; 4];
            for (k, slot) in q.iter_mut().enumerate() {
                *slot = bytes.get((ix & !3) + k).copied().unwrap_or(0);
            }
            i32::from_be_bytes(q) >> ((3 - (ix & 3)) * 8)
        };
        let mut units = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            i += 1;
            if c < 0x80 {
                units.push(u16::from(c));
                continue;
            }
            let Some((mut v, needed)) = utf8_lead(c) else {
                return Err(self.invalid_initial(c));
            };
            if i + needed > bytes.len() {
                return Err(self.invalid_eof(" in field name"));
            }
            for k in 0..needed {
                let d = bytes[i];
                if d & 0xC0 != 0x80 {
                    let shown = if k < 2 { quad_view(i) } else { i32::from(d) };
                    return Err(self.report_error(format!("Invalid UTF-8 middle byte 0x{shown:x}")));
                }
                i += 1;
                v = (v << 6) | u32::from(d & 0x3F);
            }
            if needed == 2 && (0xD800..=0xDFFF).contains(&v) && self.rules.refuses_surrogates {
                return Err(self.invalid_surrogate(v));
            }
            if needed == 3 {
                let v = v.wrapping_sub(0x10000);
                units.push(((v >> 10) + 0xD800) as u16);
                units.push(((v & 0x3FF) | 0xDC00) as u16);
            } else {
                units.push(v as u16);
            }
        }
        Ok(units)
    }

    // ----- strings

    /// `_decodeEscaped`, after the backslash.
    fn decode_escaped(&mut self) -> JResult<u16> {
        let Some(&b) = self.buf.get(self.ptr) else {
            return Err(self.invalid_eof(" in character escape sequence"));
        };
        self.ptr += 1;
        match b {
            b'"' | b'/' | b'\\' => Ok(u16::from(b)),
            b'b' => Ok(0x08),
            b'f' => Ok(0x0C),
            b'n' => Ok(0x0A),
            b'r' => Ok(0x0D),
            b't' => Ok(0x09),
            b'u' => {
                let mut value: u16 = 0;
                for _ in 0..4 {
                    let Some(&h) = self.buf.get(self.ptr) else {
                        return Err(self.invalid_eof(" in character escape sequence"));
                    };
                    self.ptr += 1;
                    let Some(digit) = (h as char).to_digit(16).filter(|_| h < 0x80) else {
                        return Err(
                            self.unexpected_char(i32::from(h), "expected a hex-digit for character escape sequence")
                        );
                    };
                    value = (value << 4) | digit as u16;
                }
                Ok(value)
            }
            _ => {
                // Java prints the character cut to 16 bits; 2.21 prints the whole code point.
                let mut ch = self.decode_char_for_error(b)?;
                if !self.rules.escape_shows_code_point {
                    ch &= 0xFFFF;
                }
                let mut msg = b"Unrecognized character escape ".to_vec();
                char_desc(&mut msg, ch as i32);
                Err(self.error_at(msg, self.location_minus_one()))
            }
        }
    }

    /// `getText()` of the current string: decodes it up to its closing quote.
    fn text(&mut self) -> JResult<Vec<u16>> {
        self.incomplete = false;
        let mut out = Vec::with_capacity(64);
        loop {
            // Runs of plain ASCII are copied in bulk; everything else byte by byte.
            let rest = &self.buf[self.ptr.min(self.buf.len())..];
            let run = rest
                .iter()
                .position(|&b| !matches!(b, 0x20..=0x7F) || b == b'"' || b == b'\\')
                .unwrap_or(rest.len());
            out.extend(rest[..run].iter().map(|&b| u16::from(b)));
            self.ptr += run;
            let c = self.next_byte()?;
            match c {
                b'"' => return Ok(out),
                b'\\' => out.push(self.decode_escaped()?),
                0..=31 => return Err(self.unquoted_space(i32::from(c), "string value")),
                0x20..=0x7F => out.push(u16::from(c)),
                _ => self.decode_utf8_into(c, &mut out)?,
            }
        }
    }

    /// Decodes one multi-byte UTF-8 character of a string value into UTF-16 units.
    fn decode_utf8_into(&mut self, c: u8, out: &mut Vec<u16>) -> JResult<()> {
        let Some((bits, needed)) = utf8_lead(c) else {
            return Err(self.invalid_char(c));
        };
        let v = self.continuation_bytes(bits, needed)?;
        match needed {
            2 if (0xD800..=0xDFFF).contains(&v) && self.rules.refuses_surrogates => {
                return Err(self.invalid_surrogate(v))
            }
            3 => {
                let v = v.wrapping_sub(0x10000);
                out.push(((v >> 10) | 0xD800) as u16);
                out.push(((v & 0x3FF) | 0xDC00) as u16);
            }
            _ => out.push(v as u16),
        }
        Ok(())
    }

    /// `_skipString`: a string that nobody read, skipped with the same checks.
    fn skip_string(&mut self) -> JResult<()> {
        self.text().map(|_| ())
    }
}

// ===== character classes =====

const ERROR_FIELD: &[u16] = &[b'e' as u16, b'r' as u16, b'r' as u16, b'o' as u16, b'r' as u16];

enum CommentCode {
    Plain,
    Star,
    Lf,
    Cr,
    Utf8(usize),
    Invalid,
}

/// Jackson's `sInputCodesComment`.
fn comment_code(c: u8) -> CommentCode {
    match c {
        b'\t' => CommentCode::Plain,
        b'\n' => CommentCode::Lf,
        b'\r' => CommentCode::Cr,
        b'*' => CommentCode::Star,
        0..=31 => CommentCode::Invalid,
        0x20..=0x7F => CommentCode::Plain,
        _ => match utf8_lead(c) {
            Some((_, needed)) => CommentCode::Utf8(needed + 1),
            None => CommentCode::Invalid,
        },
    }
}

/// A UTF-8 lead byte as Jackson classifies it (`0xC0`/`0xC1` and `0xF5`..`0xF7` included): the
/// value bits it carries and how many continuation bytes follow; `None` for any other byte.
fn utf8_lead(c: u8) -> Option<(u32, usize)> {
    match c {
        _ if c & 0xE0 == 0xC0 => Some((u32::from(c & 0x1F), 1)),
        _ if c & 0xF0 == 0xE0 => Some((u32::from(c & 0x0F), 2)),
        _ if c & 0xF8 == 0xF0 => Some((u32::from(c & 0x07), 3)),
        _ => None,
    }
}

/// `head`, the character as Jackson names it, `tail`.
fn char_message(head: &str, ch: i32, tail: &str) -> Vec<u8> {
    let mut msg = head.as_bytes().to_vec();
    char_desc(&mut msg, ch);
    msg.extend_from_slice(tail.as_bytes());
    msg
}

/// `_getCharDesc`: how Jackson names a character in a message.
fn char_desc(out: &mut Vec<u8>, ch: i32) {
    let unit = ch as u32 as u16;
    let iso_control = unit < 0x20 || (0x7F..=0x9F).contains(&unit);
    if iso_control {
        out.extend_from_slice(format!("(CTRL-CHAR, code {ch})").as_bytes());
        return;
    }
    out.push(b'\'');
    push_utf16_as_wtf8(out, &[unit]);
    out.push(b'\'');
    if ch > 255 {
        out.extend_from_slice(format!(" (code {ch} / 0x{ch:x})").as_bytes());
    } else {
        out.extend_from_slice(format!(" (code {ch})").as_bytes());
    }
}

/// The UTF-16 units of a Java `(char) ch` as a one-character string.
fn char_units(ch: i32) -> Vec<u16> {
    vec![ch as u32 as u16]
}

// ===== text helpers =====

/// Appends UTF-16 units as WTF-8: pairs become 4-byte UTF-8, lone surrogates 3-byte sequences.
fn push_utf16_as_wtf8(out: &mut Vec<u8>, units: &[u16]) {
    let mut i = 0;
    while i < units.len() {
        let u = units[i];
        if (0xD800..=0xDBFF).contains(&u) && units.get(i + 1).is_some_and(|l| (0xDC00..=0xDFFF).contains(l)) {
            let c = 0x10000 + ((u32::from(u) - 0xD800) << 10) + (u32::from(units[i + 1]) - 0xDC00);
            push_code_point_utf8(out, c);
            i += 2;
        } else {
            push_code_point_utf8(out, u32::from(u));
            i += 1;
        }
    }
}

/// UTF-8 (generalised: surrogates encoded as any other value) of one code point.
#[inline]
fn push_code_point_utf8(out: &mut Vec<u8>, c: u32) {
    if c < 0x80 {
        out.push(c as u8);
    } else if c < 0x800 {
        out.extend_from_slice(&[0xC0 | (c >> 6) as u8, 0x80 | (c & 0x3F) as u8]);
    } else if c < 0x10000 {
        out.extend_from_slice(&[
            0xE0 | (c >> 12) as u8,
            0x80 | ((c >> 6) & 0x3F) as u8,
            0x80 | (c & 0x3F) as u8,
        ]);
    } else {
        out.extend_from_slice(&[
            0xF0 | ((c >> 18) & 0x07) as u8,
            0x80 | ((c >> 12) & 0x3F) as u8,
            0x80 | ((c >> 6) & 0x3F) as u8,
            0x80 | (c & 0x3F) as u8,
        ]);
    }
}

/// A JSON string literal for UTF-16 units, as Jackson's UTF-8 generator writes it: `"`, `\` and
/// control characters escaped, other BMP characters as UTF-8, every surrogate as `\uXXXX`.
fn write_utf16_literal(out: &mut Vec<u8>, units: &[u16]) {
    out.reserve(units.len() + 2);
    out.push(b'"');
    for &u in units {
        match u {
            0x20..=0x7F if u != 0x22 && u != 0x5C => out.push(u as u8),
            0x22 => out.extend_from_slice(b"\\\""),
            0x5C => out.extend_from_slice(b"\\\\"),
            0x0A => out.extend_from_slice(b"\\n"),
            0x0D => out.extend_from_slice(b"\\r"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            0x00..=0x1F | 0xD800..=0xDFFF => push_unicode_escape(out, u),
            _ => push_code_point_utf8(out, u32::from(u)),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(body: &[u8]) -> String {
        match check(body, Dialect::NEWEST) {
            BodyVerdict::Accept { literal } => format!("OK {}", String::from_utf8_lossy(&literal)),
            BodyVerdict::Reject(e) => format!("ERR {}", String::from_utf8_lossy(&e.to_compact())),
            BodyVerdict::Unchecked(why) => format!("DEFER {why}"),
        }
    }

    #[test]
    fn accepts_strings_null_comments_and_trailing_garbage() {
        assert_eq!(verdict(br#"{"error":"boom"}"#), r#"OK "boom""#);
        assert_eq!(verdict(br#"{"error":null}"#), "OK null");
        assert_eq!(
            verdict(b"/* c */ {\"error\" : // x\n \"a\\u00e9\\ud83d\\ude00\"} garbage"),
            "OK \"a\u{e9}\\uD83D\\uDE00\""
        );
        assert_eq!(verdict(b"\xEF\xBB\xBF{\"error\":\"\"}"), r#"OK """#);
    }

    #[test]
    fn rejects_like_elasticsearch() {
        assert!(verdict(b"{}").contains("Required [error]"));
        assert!(verdict(br#"{"error":1}"#)
            .contains("[1:10] [connector_update_error_request] error doesn't support values of type: VALUE_NUMBER"));
        assert!(verdict(br#"{"erro":"x"}"#).contains("unknown field [erro] did you mean [error]?"));
        assert!(verdict(b" ").contains("[1:0] [connector_update_error_request] Expected START_OBJECT but was: null"));
    }

    #[test]
    fn the_canonical_shortcut_agrees_with_the_tokenizer() {
        for body in [
            &br#"{"error":"connection refused: db:5432/x"}"#[..],
            br#"{"error":""}"#,
            br#"{"error":"~ !#$%&'()*+,-./"}"#,
        ] {
            let short = canonical_literal(body).expect("canonical");
            let mut parser = Parser::new(body, 0, Dialect::NEWEST);
            let units = parser.parse().ok().flatten().expect("accepted");
            let mut full = Vec::new();
            write_utf16_literal(&mut full, &units);
            assert_eq!(short, &full[..]);
        }
        for body in [
            &br#"{"error":"a\nb"}"#[..],
            br#"{"error":"a"b"}"#,
            b"{\"error\":\"\x7f\"}",
            br#"{"error":null}"#,
            br#"{"error":"x"} "#,
        ] {
            assert!(canonical_literal(body).is_none(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_word_at_a_time_scan_is_the_byte_at_a_time_one() {
        // Every byte value at every place of a plain value, of every length up to three words
        // (whole words and remainders alike), with plain neighbours and with a special one.
        for len in 1..=24 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut value = vec![b'a'; len];
                    value[at] = b;
                    assert_eq!(plain(&value), plain_byte(b), "{b:#x} at {at} of {len}");
                    value[(at + 1) % len] = 0x80;
                    assert!(!plain(&value), "{b:#x} at {at} of {len}, and 0x80");
                }
            }
        }
        assert!(plain(b""));
        assert!(plain(b" ~!#$%&'()*+,-./0123456789:;<=>?@[]^_`{|}"));
    }

    #[test]
    fn never_panics_on_prefixes_of_a_tricky_body() {
        let body = "\u{feff}{\"error\" /*x*/: \"a\\u12\\q\u{e9}\u{1F600}\" , \"e\\ud800\": -1.5e+3, nul".as_bytes();
        for end in 0..=body.len() {
            let _ = check(&body[..end], Dialect::NEWEST);
        }
    }
}
