//! Comparing the oracle's answers with esgate's verdicts, and the report of a test: counts,
//! mismatches grouped by kind, the first in full, and a file of every mismatching body in the
//! oracle's input format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use esgate::elasticsearch::{check_body, BodyVerdict, Dialect};

use crate::oracle_io::{parse_answer, target_dir, Answer};
use crate::{checked_as, BodyDialect, ALLOWED_UNCHECKED, SHOWN};

/// Kinds of difference listed in a failure message.
const KINDS_SHOWN: usize = 30;

/// Why esgate's verdict and the oracle's answer disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Category {
    /// Both 400, but the bodies differ.
    DifferentError,
    /// The oracle accepts; esgate answers 400.
    RejectsAccepted,
    /// The oracle answers 400; esgate accepts.
    AcceptsRejected,
    /// Both accept, with different literals.
    DifferentLiteral,
    /// The oracle does not know Elasticsearch's answer; esgate decides anyway.
    DecidesUnmodelled,
    /// `check_body` panicked.
    Panicked,
    /// The oracle's answer line is not `OK`, `ERR` or `UNMODELLED`.
    UnreadableAnswer,
    /// esgate forwards unchecked a body the oracle decides, for a reason not in [`ALLOWED_UNCHECKED`].
    Deferred,
}

impl Category {
    fn describe(self) -> &'static str {
        match self {
            Category::DifferentError => "both reject, different 400 bodies",
            Category::RejectsAccepted => "esgate rejects a body Elasticsearch accepts",
            Category::AcceptsRejected => "esgate accepts a body Elasticsearch rejects",
            Category::DifferentLiteral => "both accept, different `error` literals",
            Category::DecidesUnmodelled => "esgate decides where the oracle says UNMODELLED",
            Category::Panicked => "check_body panicked",
            Category::UnreadableAnswer => "oracle answer not understood (BAD?)",
            Category::Deferred => "DEFERRED where the oracle decides (not in ALLOWED_UNCHECKED)",
        }
    }
}

/// esgate's verdict, or the panic message of `check_body`.
type Verdict = Result<BodyVerdict, String>;

fn run_check(body: &[u8], dialect: Dialect) -> Verdict {
    catch_unwind(AssertUnwindSafe(|| check_body(body, dialect))).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "(non-string panic)".into())
    })
}

enum Outcome {
    Agree,
    AllowedUnchecked(&'static str),
    Mismatch(Category),
}

fn compare(answer: &[u8], verdict: &Verdict) -> Outcome {
    let verdict = match verdict {
        Ok(v) => v,
        Err(_) => return Outcome::Mismatch(Category::Panicked),
    };
    let agree = |same: bool, category| {
        if same {
            Outcome::Agree
        } else {
            Outcome::Mismatch(category)
        }
    };
    match (parse_answer(answer), verdict) {
        (Answer::Unreadable, _) => Outcome::Mismatch(Category::UnreadableAnswer),
        (Answer::Err(json), BodyVerdict::Reject(e)) => agree(e.to_compact() == json, Category::DifferentError),
        (Answer::Err(_), BodyVerdict::Accept { .. }) => Outcome::Mismatch(Category::AcceptsRejected),
        (Answer::Ok(want), BodyVerdict::Accept { literal }) => agree(literal[..] == *want, Category::DifferentLiteral),
        (Answer::Ok(_), BodyVerdict::Reject(_)) => Outcome::Mismatch(Category::RejectsAccepted),
        (Answer::Unmodelled, BodyVerdict::Unchecked(_)) => Outcome::Agree,
        (Answer::Unmodelled, _) => Outcome::Mismatch(Category::DecidesUnmodelled),
        (Answer::Ok(_) | Answer::Err(_), BodyVerdict::Unchecked(reason)) => {
            match ALLOWED_UNCHECKED.iter().find(|a| a.reason == *reason) {
                Some(allowed) => Outcome::AllowedUnchecked(allowed.reason),
                None => Outcome::Mismatch(Category::Deferred),
            }
        }
    }
}

/// esgate's verdict in the oracle's answer format (`DEFER` and `PANIC` for its own two cases).
fn show_verdict(verdict: &Verdict) -> Vec<u8> {
    match verdict {
        Ok(BodyVerdict::Accept { literal }) => [&b"OK "[..], &literal[..]].concat(),
        Ok(BodyVerdict::Reject(e)) => [&b"ERR "[..], &e.to_compact()].concat(),
        Ok(BodyVerdict::Unchecked(reason)) => format!("DEFER {reason:?}").into_bytes(),
        Err(panic) => format!("PANIC {panic:?}").into_bytes(),
    }
}

/// A short description of an answer line (the oracle's, or esgate's from [`show_verdict`]), for
/// grouping mismatches by kind: its verdict, and for a 400 the types of the exception chain and
/// the root cause's reason with locations, snippets and quoted text taken out.
fn answer_shape(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    if let Some(json) = line.strip_prefix(b"ERR ") {
        let json_text = String::from_utf8_lossy(json);
        let top = json_text
            .split_once("}],\"type\":\"")
            .and_then(|(_, rest)| rest.split('"').next())
            .unwrap_or("?");
        let causes: Vec<&str> = json_text
            .split("\"caused_by\":{\"type\":\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        let chain = if causes.is_empty() {
            top.to_owned()
        } else {
            format!("{top} > {}", causes.join(" > "))
        };
        return format!("ERR [{chain}] root {}", error_shape(json));
    }
    if text.starts_with("OK null") {
        return "OK null".into();
    }
    if text.starts_with("OK ") {
        return "OK <string>".into();
    }
    if let Some(rest) = text.strip_prefix("UNMODELLED ") {
        return format!("UNMODELLED {}", rest.split(':').next().unwrap_or(rest));
    }
    clip(&text, 120)
}

/// Where two answer lines first differ, with a little context from each.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let window = |s: &[u8]| {
        let from = at.saturating_sub(20);
        let to = (at + 40).min(s.len());
        String::from_utf8_lossy(&s[from.min(s.len())..to]).into_owned()
    };
    format!("byte {at}: oracle …{}… / esgate …{}…", window(a), window(b))
}

/// One kind of difference: how often, and the first body of that kind.
struct Kind {
    count: usize,
    example: String,
}

pub(crate) struct Report {
    dialect: BodyDialect,
    /// What `check_body` is given (see [`checked_as`]).
    checked_as: Dialect,
    title: String,
    file: PathBuf,
    pub(crate) checked: usize,
    agreed: usize,
    pub(crate) oracle_kinds: BTreeMap<&'static str, usize>,
    error_shapes: BTreeMap<String, usize>,
    allowed: BTreeMap<&'static str, usize>,
    mismatches: BTreeMap<Category, usize>,
    /// Mismatches by (category, oracle shape, esgate shape).
    kinds: BTreeMap<(Category, String, String), Kind>,
    /// The first mismatches, in full.
    shown: Vec<String>,
    /// Every mismatch, in the oracle's input format.
    replay: String,
    pub(crate) generator_problem: String,
}

impl Report {
    pub(crate) fn new(dialect: BodyDialect, title: &str, file_name: &str) -> Self {
        let checked_as = checked_as(dialect);
        let title = if checked_as == dialect.dialect {
            title.to_owned()
        } else {
            format!("{title}, esgate checking as {checked_as} (ESGATE_ORACLE_CHECK_AS)")
        };
        Report {
            dialect,
            checked_as,
            title,
            file: target_dir().join(file_name),
            checked: 0,
            agreed: 0,
            oracle_kinds: BTreeMap::new(),
            error_shapes: BTreeMap::new(),
            allowed: BTreeMap::new(),
            mismatches: BTreeMap::new(),
            kinds: BTreeMap::new(),
            shown: Vec::new(),
            replay: String::new(),
            generator_problem: String::new(),
        }
    }

    /// Checks `body` with esgate and compares the verdict with the oracle's `answer`.
    pub(crate) fn record(&mut self, label: &str, body: &[u8], answer: &[u8]) {
        self.checked += 1;
        let kind = match parse_answer(answer) {
            Answer::Ok(_) => "OK",
            Answer::Err(json) => {
                *self.error_shapes.entry(error_shape(json)).or_default() += 1;
                "ERR"
            }
            Answer::Unmodelled => "UNMODELLED",
            Answer::Unreadable => "unreadable",
        };
        *self.oracle_kinds.entry(kind).or_default() += 1;
        let verdict = run_check(body, self.checked_as);
        let category = match compare(answer, &verdict) {
            Outcome::Agree => {
                self.agreed += 1;
                return;
            }
            Outcome::AllowedUnchecked(reason) => {
                *self.allowed.entry(reason).or_default() += 1;
                return;
            }
            Outcome::Mismatch(category) => category,
        };
        *self.mismatches.entry(category).or_default() += 1;
        let esgate = show_verdict(&verdict);
        let b64 = BASE64.encode(body);
        let text = clip(&body.escape_ascii().to_string(), 300);
        let entry = self
            .kinds
            .entry((category, answer_shape(answer), answer_shape(&esgate)))
            .or_insert_with(|| Kind {
                count: 0,
                example: format!("{label}: {text}"),
            });
        entry.count += 1;
        if self.shown.len() < SHOWN {
            let difference = if category == Category::DifferentError || category == Category::DifferentLiteral {
                format!("\n  differs at {}", first_difference(answer, &esgate))
            } else {
                String::new()
            };
            self.shown.push(format!(
                "[{cat}] {label}\n  body:   {len} bytes: {text}\n  base64: {b64}\n  oracle: {oracle}\n  esgate: {esg}{difference}\n",
                cat = category.describe(),
                len = body.len(),
                b64 = clip(&b64, 600),
                oracle = clip(&String::from_utf8_lossy(answer), 1500),
                esg = clip(&String::from_utf8_lossy(&esgate), 1500),
            ));
        }
        let one_line = |bytes: &[u8]| String::from_utf8_lossy(bytes).replace(['\n', '\r'], " ");
        let _ = write!(
            self.replay,
            "# [{}] {}\n# oracle: {}\n# esgate: {}\n{b64}\n",
            category.describe(),
            one_line(label.as_bytes()),
            clip(&one_line(answer), 3000),
            clip(&one_line(&esgate), 3000),
        );
    }

    pub(crate) fn coverage(&self) -> String {
        let kinds: Vec<String> = self.oracle_kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "oracle answers: {}; {} distinct error shapes (root cause type and message start)",
            kinds.join(", "),
            self.error_shapes.len()
        )
    }

    /// Panics with the whole report if anything disagreed; otherwise removes an old mismatch file.
    pub(crate) fn finish(self, footer: &str) {
        let failed: usize = self.mismatches.values().sum();
        if failed == 0 {
            let _ = std::fs::remove_file(&self.file);
            if self.generator_problem.is_empty() {
                return;
            }
        }
        let mut msg = format!(
            "{}: {} bodies, {} agree, {} allowed unchecked, {failed} MISMATCHES\n{}\n",
            self.title,
            self.checked,
            self.agreed,
            self.allowed.values().sum::<usize>(),
            self.coverage(),
        );
        if !self.kinds.is_empty() {
            let mut kinds: Vec<_> = self.kinds.iter().collect();
            kinds.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
            let _ = writeln!(
                msg,
                "\nmismatches by kind ({} kinds; count, category, then oracle / esgate answer shapes and a first example):",
                kinds.len()
            );
            for ((category, oracle, esgate), kind) in kinds.iter().take(KINDS_SHOWN) {
                let same = if oracle == esgate {
                    " (same shape: a location, number or quoted text differs)"
                } else {
                    ""
                };
                let _ = writeln!(
                    msg,
                    "  {:>6}  {}{same}\n          oracle: {}\n          esgate: {}\n          e.g. {}",
                    kind.count,
                    category.describe(),
                    clip(oracle, 200),
                    clip(esgate, 200),
                    clip(&kind.example, 200)
                );
            }
            if kinds.len() > KINDS_SHOWN {
                let _ = writeln!(msg, "  … and {} more kinds", kinds.len() - KINDS_SHOWN);
            }
        }
        if !self.shown.is_empty() {
            let _ = writeln!(msg, "\nthe first {} mismatches:", self.shown.len());
            for (i, details) in self.shown.iter().enumerate() {
                let _ = write!(msg, "\n#{} {details}", i + 1);
            }
        }
        msg.push_str("\nmismatches per category:\n");
        for (category, n) in &self.mismatches {
            let _ = writeln!(msg, "  {n:>6}  {}", category.describe());
        }
        if self.allowed.is_empty() {
            let _ = writeln!(
                msg,
                "allowed unchecked: none ({} in ALLOWED_UNCHECKED)",
                ALLOWED_UNCHECKED.len()
            );
        } else {
            msg.push_str("allowed unchecked (not failures):\n");
            for (reason, n) in &self.allowed {
                let why = ALLOWED_UNCHECKED
                    .iter()
                    .find(|a| a.reason == *reason)
                    .map_or("", |a| a.why);
                let _ = writeln!(msg, "  {n:>6}  {reason:?}: {why}");
            }
        }
        if !self.replay.is_empty() {
            match std::fs::write(&self.file, &self.replay) {
                Ok(()) => {
                    let _ = writeln!(
                        msg,
                        "all {failed} mismatching bodies, as oracle input: {}\n  replay: {}",
                        self.file.display(),
                        self.dialect.replay_command(&self.file)
                    );
                }
                Err(e) => {
                    let _ = writeln!(msg, "(could not write {}: {e})", self.file.display());
                }
            }
        }
        msg.push_str(&self.generator_problem);
        msg.push_str(footer);
        panic!("{msg}");
    }
}

/// The shape of an `ERR` answer, for the coverage line: the root cause's type and its reason
/// without location, snippet, quoted characters, field names and numbers.
fn error_shape(json: &[u8]) -> String {
    let text = String::from_utf8_lossy(json);
    let root = text.split("\"root_cause\":[{\"type\":\"").nth(1).unwrap_or("?");
    let error_type = root.split('"').next().unwrap_or("?");
    let reason = root.split("\"reason\":\"").nth(1).unwrap_or("?");
    let reason = reason.split("\\n").next().unwrap_or("?");
    let reason = reason.split("\"}").next().unwrap_or("?");
    let reason = match reason.strip_prefix('[') {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.split_once("] ").map_or(reason, |(_, r)| r)
        }
        _ => reason,
    };
    let reason = match reason.split_once("unknown field [") {
        Some((head, rest)) => {
            let hint = if rest.contains("did you mean") {
                " did you mean"
            } else {
                ""
            };
            format!("{head}unknown field [..]{hint}")
        }
        None => reason.to_owned(),
    };
    let mut shape = String::new();
    let mut chars = reason.chars().peekable();
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        if c == '\'' && (prev == ' ' || prev == '(') {
            // a quoted token or character: drop its content
            for q in chars.by_ref() {
                if q == '\'' {
                    break;
                }
            }
            shape.push_str("''");
        } else if c.is_ascii_digit() {
            if c == '0' && chars.peek() == Some(&'x') {
                chars.next();
            }
            while chars.peek().is_some_and(char::is_ascii_hexdigit) {
                chars.next();
            }
            shape.push('#');
        } else {
            shape.push(c);
        }
        prev = c;
    }
    format!("{error_type}: {}", shape.chars().take(90).collect::<String>())
}

pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &s[..end], s.len() - end)
}
