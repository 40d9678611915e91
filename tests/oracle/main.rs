//! esgate's body check (`esgate::elasticsearch::check_body`) against the project's oracle,
//! `tests/oracle/Oracle.java`: Elasticsearch's parse path for `PUT /_connector/<id>/_error`
//! bodies on the real jackson-core library, run by `scripts/oracle` (see `tests/oracle/README.md`).
//!
//! The body check depends only on a dialect's wrapping and Jackson family, so the tests run once
//! per *body dialect*: each (wrapping, Jackson) pair of `Dialect::ALL`, checked as the first dialect
//! that has it, against the oracle on the matching jar (`b0-2.17.2`, `b-2.17.2`, `c-2.17.2`, `c-2.18.4`,
//! `c-2.22.4`). For each there is a module of three tests:
//!
//! * `fixture`: every case of `tests/oracle/cases.txt` against the same line of
//!   `tests/oracle/expected/<dialect>.txt`. No JVM, milliseconds.
//! * `expected_file_is_current`: the live oracle answers `cases.txt` exactly as the committed
//!   `expected/<dialect>.txt` says (`scripts/oracle --regenerate` rewrites them).
//! * `live`: the cases, handcrafted seeds and bodies made from them by a deterministic generator,
//!   `ESGATE_ORACLE_BODIES` in all (default [`DEFAULT_BODIES`]), seeded by `ESGATE_ORACLE_SEED`
//!   (default [`DEFAULT_SEED`]; decimal or `0x` hex), through esgate and through one oracle process
//!   that stays up for the whole test binary.
//!
//! An oracle answer and esgate's verdict agree when:
//!
//! | oracle | esgate |
//! |---|---|
//! | `ERR <json>` | `Reject(e)` with `e.to_compact()` byte-equal to `<json>` |
//! | `OK <literal>` | `Accept { literal }` with the same bytes |
//! | `UNMODELLED ...` | `Unchecked(_)` |
//!
//! An `Unchecked` where the oracle gave `OK` or `ERR` is a mismatch, unless its reason is listed in
//! [`ALLOWED_UNCHECKED`]. A panic of `check_body` is a mismatch too. A failing test prints the
//! mismatches grouped by kind (oracle answer shape against esgate's), the first 20 in full (body
//! escaped and in base64, both answers, where they first differ), and writes every mismatching body
//! to `target/oracle-mismatches-<dialect>.txt` (`-fixture.txt` for the fixture test) in the
//! oracle's input format: `scripts/oracle --jackson <version> --wrapping <b|c> < that-file`.
//!
//! `ESGATE_ORACLE_CHECK_AS=<dialect name>` (e.g. `9-c-2.21`) makes esgate check every body as that
//! dialect instead, against each oracle: it shows where one dialect's logic differs from the others.
//!
//! When the jar of a dialect is not available here (`scripts/oracle --jar-path` exits 3), its JVM
//! tests print `SKIPPED dialect <name>: <reason>` to stderr and append that line to
//! `target/skipped-dialects.txt` (which `scripts/test` reports); with `CI=true` they fail instead.
//!
//! This file holds the allow-list and the tests; the rest of the test target is split by role:
//! `generator.rs` makes the live test's bodies, `oracle_io.rs` runs the oracle and reads its files
//! and answers, `report.rs` compares answers with esgate's verdicts and reports mismatches.

use std::path::Path;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use esgate::elasticsearch::dialect::{Jackson, Wrapping};
use esgate::elasticsearch::Dialect;

use generator::Generator;
use oracle_io::{decode_case, read_oracle_file, with_oracle};
use report::{clip, Report};

mod generator;
mod oracle_io;
mod report;

// ===== the allow-list =====

/// A reason of `BodyVerdict::Unchecked` for which esgate may forward a body although the oracle knows
/// Elasticsearch's answer (`OK` or `ERR`). Each entry says why forwarding is right for that class.
/// Keep it short: every entry is a class of bodies that esgate does not check itself.
#[derive(Debug)]
struct AllowedUnchecked {
    /// The `Unchecked` reason, exactly as `check_body` gives it.
    reason: &'static str,
    /// Why forwarding unchecked is acceptable for these bodies.
    why: &'static str,
}

/// Unchecked bodies allowed where the oracle decides.
const ALLOWED_UNCHECKED: &[AllowedUnchecked] = &[
    AllowedUnchecked {
        reason: "the body is UTF-16 or UTF-32, which Jackson reads with another parser",
        why: "Jackson reads these with its char-based parser (other locations and snippets); whether \
              Elasticsearch hands such bodies to Jackson intact is unverified (docs/connector-error.md, \
              \"What esgate forwards unchecked, and why\"), so Elasticsearch answers them itself",
    },
    AllowedUnchecked {
        reason: "a field name holds byte 0xFF, which Jackson may match to a name it saw earlier",
        why: "Jackson's symbol table pads names with 0xFF bytes and is shared by every request of an \
              Elasticsearch node, so such a name may match a name seen in any earlier request: the \
              oracle starts each body with an empty table, a live node does not",
    },
];

// ===== configuration =====

/// Seed of the generator when `ESGATE_ORACLE_SEED` is not set.
const DEFAULT_SEED: u64 = 0x0e5_6a7e_c0de_5eed;
/// Bodies per dialect when `ESGATE_ORACLE_BODIES` is not set.
const DEFAULT_BODIES: u64 = 10_000;
/// Mismatches printed in full in a failure message.
const SHOWN: usize = 20;

/// The dialect esgate checks bodies as: the body dialect's own, unless `ESGATE_ORACLE_CHECK_AS`
/// names another (e.g. `9-c-2.21`), to see where that dialect's logic and this oracle differ.
fn checked_as(d: BodyDialect) -> Dialect {
    match std::env::var("ESGATE_ORACLE_CHECK_AS") {
        Ok(name) if !name.trim().is_empty() => Dialect::from_name(name.trim())
            .unwrap_or_else(|| panic!("ESGATE_ORACLE_CHECK_AS={name:?} is not a dialect name (e.g. 9-c-2.21)")),
        _ => d.dialect,
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => v.replace('_', "").parse::<u64>(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
        }
    }
}

// ===== body dialects =====

/// One way of reading bodies: a (wrapping, Jackson) pair, checked as the first dialect of
/// `Dialect::ALL` that has it.
#[derive(Clone, Copy, Debug)]
struct BodyDialect {
    dialect: Dialect,
}

impl BodyDialect {
    fn of(wrapping: Wrapping, jackson: Jackson) -> BodyDialect {
        let dialect = Dialect::ALL
            .into_iter()
            .find(|d| d.wrapping() == wrapping && d.jackson() == jackson)
            .unwrap_or_else(|| panic!("no dialect of Dialect::ALL has wrapping {wrapping:?} and {jackson:?}"));
        BodyDialect { dialect }
    }

    /// `scripts/oracle --wrapping` for it: the variant's name in lower case (`b0`, `b`, `c`).
    fn wrapping_flag(self) -> String {
        format!("{:?}", self.dialect.wrapping()).to_lowercase()
    }

    fn jar_version(self) -> &'static str {
        self.dialect.jackson().oracle_jar_version()
    }

    /// `<wrapping>-<jar version>`, e.g. `c-2.22.4`: the name of its expected file.
    fn name(self) -> String {
        format!("{}-{}", self.wrapping_flag(), self.jar_version())
    }

    /// The dialects that read bodies this way, e.g. `8-b-2.17, 9-b-2.17`.
    fn members(self) -> String {
        let key = (self.dialect.wrapping(), self.dialect.jackson());
        Dialect::ALL
            .into_iter()
            .filter(|d| (d.wrapping(), d.jackson()) == key)
            .map(Dialect::name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn replay_command(self, file: &Path) -> String {
        format!(
            "scripts/oracle --jackson {} --wrapping {} < {}",
            self.jar_version(),
            self.wrapping_flag(),
            file.display()
        )
    }
}

/// One module of tests per body dialect; `TESTED` lists them for `every_body_dialect_is_tested`.
macro_rules! body_dialect_tests {
    ($($module:ident: $wrapping:ident, $jackson:ident;)*) => {
        $(
            mod $module {
                use super::*;

                fn dialect() -> BodyDialect {
                    BodyDialect::of(Wrapping::$wrapping, Jackson::$jackson)
                }

                #[test]
                fn fixture() {
                    fixture_test(dialect());
                }

                #[test]
                fn expected_file_is_current() {
                    expected_file_test(dialect());
                }

                #[test]
                fn live() {
                    live_test(dialect());
                }
            }
        )*
        const TESTED: &[(Wrapping, Jackson)] = &[$((Wrapping::$wrapping, Jackson::$jackson)),*];
    };
}

body_dialect_tests! {
    b0_2_17: B0, V2_17;
    b_2_17: B, V2_17;
    c_2_17: C, V2_17;
    c_2_18: C, V2_18;
    c_2_21: C, V2_21;
}

#[test]
fn every_body_dialect_is_tested() {
    let mut pairs: Vec<(Wrapping, Jackson)> = Vec::new();
    for d in Dialect::ALL {
        let key = (d.wrapping(), d.jackson());
        if !pairs.contains(&key) {
            pairs.push(key);
        }
    }
    let untested: Vec<String> = pairs
        .iter()
        .filter(|p| !TESTED.contains(p))
        .map(|p| format!("{p:?}"))
        .collect();
    assert!(
        untested.is_empty(),
        "body dialects without oracle tests: {} (add them to body_dialect_tests! in tests/oracle/main.rs, \
         and their jar to scripts/oracle)",
        untested.join(", ")
    );
}

// ===== the three tests =====

fn fixture_test(d: BodyDialect) {
    let name = d.name();
    let cases = read_oracle_file("cases.txt");
    let expected = read_oracle_file(&format!("expected/{name}.txt"));
    let cases: Vec<&str> = cases.lines().collect();
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(
        cases.len(),
        expected.len(),
        "cases.txt and expected/{name}.txt differ in length: run scripts/oracle --regenerate"
    );
    let mut report = Report::new(
        d,
        &format!("fixture test of {name} (cases.txt against expected/{name}.txt, no JVM)"),
        &format!("oracle-mismatches-{name}-fixture.txt"),
    );
    let mut label = String::new();
    for (i, (case, answer)) in cases.iter().zip(&expected).enumerate() {
        let line = i + 1;
        if case.starts_with('#') {
            assert_eq!(
                case, answer,
                "line {line}: the comment lines of cases.txt and expected/{name}.txt differ: run scripts/oracle --regenerate"
            );
            label = format!("cases.txt line {line}: {}", case.trim_start_matches('#').trim());
            continue;
        }
        let body = decode_case(case).unwrap_or_else(|e| panic!("cases.txt line {line}: {e}"));
        report.record(&label, &body, answer.as_bytes());
    }
    assert!(report.checked >= 79, "only {} cases in cases.txt", report.checked);
    report.finish(&format!(
        "\nexpected/{name}.txt holds the oracle's answers for wrapping {} on jackson-core {} (dialects {}).",
        d.wrapping_flag(),
        d.jar_version(),
        d.members()
    ));
}

fn expected_file_test(d: BodyDialect) {
    let name = d.name();
    let cases = read_oracle_file("cases.txt");
    let committed = read_oracle_file(&format!("expected/{name}.txt"));
    let lines: Vec<String> = cases.lines().map(str::to_owned).collect();
    let Some(live) = with_oracle(d, |oracle| oracle.ask(&lines)) else {
        return;
    };
    let live = live.unwrap_or_else(|e| panic!("oracle {name}: {e}"));
    let committed: Vec<&str> = committed.lines().collect();
    let mut differences = Vec::new();
    let mut label = "";
    for (i, case) in lines.iter().enumerate() {
        if case.starts_with('#') {
            label = case;
        }
        let want = committed.get(i).copied().unwrap_or("(no such line)");
        let got = String::from_utf8_lossy(&live[i]);
        if want != got {
            differences.push(format!(
                "line {}: {label}\n  committed: {}\n  live:      {}\n",
                i + 1,
                clip(want, 600),
                clip(&got, 600)
            ));
        }
    }
    if committed.len() != lines.len() {
        differences.push(format!(
            "expected/{name}.txt has {} lines, cases.txt {}\n",
            committed.len(),
            lines.len()
        ));
    }
    assert!(
        differences.is_empty(),
        "tests/oracle/expected/{name}.txt is not what the oracle answers now ({} differences; first {}):\n{}\n\
         If Oracle.java or cases.txt changed on purpose: scripts/oracle --regenerate, and review the diff.",
        differences.len(),
        differences.len().min(SHOWN),
        differences.iter().take(SHOWN).cloned().collect::<String>()
    );
}

fn live_test(d: BodyDialect) {
    let name = d.name();
    let seed = env_number("ESGATE_ORACLE_SEED", DEFAULT_SEED);
    let count = usize::try_from(env_number("ESGATE_ORACLE_BODIES", DEFAULT_BODIES))
        .expect("ESGATE_ORACLE_BODIES fits in usize");
    let replay = format!("seed {seed:#x}; rerun with ESGATE_ORACLE_SEED={seed:#x} ESGATE_ORACLE_BODIES={count}");
    let bodies = Generator::new(seed).bodies(count);
    let lines: Vec<String> = bodies.iter().map(|(_, body)| BASE64.encode(body)).collect();
    let started = Instant::now();
    let Some(answers) = with_oracle(d, |oracle| oracle.ask(&lines)) else {
        return;
    };
    let answers = answers.unwrap_or_else(|e| panic!("oracle {name}: {e}\n{replay}"));
    let oracle_time = started.elapsed();

    let mut report = Report::new(
        d,
        &format!("live differential test of {name} ({replay})"),
        &format!("oracle-mismatches-{name}.txt"),
    );
    for ((label, body), answer) in bodies.iter().zip(&answers) {
        report.record(label, body, answer);
    }
    eprintln!(
        "live oracle {name}: {} bodies answered in {:.1}s; {}",
        answers.len(),
        oracle_time.as_secs_f64(),
        report.coverage()
    );
    // The generator must reach both sides of the check, or the comparison proves little.
    let share = |kind: &str| report.oracle_kinds.get(kind).copied().unwrap_or(0) * 100 / count.max(1);
    if count >= 1000 && (share("OK") < 5 || share("ERR") < 5) {
        report.generator_problem = format!(
            "\nGENERATOR PROBLEM: fewer than 5% of the bodies are OK or ERR: {}",
            report.coverage()
        );
    }
    report.finish(&format!(
        "\n{replay}\nThe oracle ran wrapping {} on jackson-core {} (dialects {}).",
        d.wrapping_flag(),
        d.jar_version(),
        d.members()
    ));
}
