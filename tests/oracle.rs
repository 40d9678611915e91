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
//! | `UNMODELLED ...` | `Defer(_)` |
//!
//! A `Defer` where the oracle gave `OK` or `ERR` is a mismatch, unless its reason is listed in
//! [`ALLOWED_DEFERRALS`]. A panic of `check_body` is a mismatch too. A failing test prints the
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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use esgate::elasticsearch::dialect::{Jackson, Wrapping};
use esgate::elasticsearch::{check_body, BodyVerdict, Dialect};

// ===== the allow-list =====

/// A reason of `BodyVerdict::Defer` for which esgate may forward a body although the oracle knows
/// Elasticsearch's answer (`OK` or `ERR`). Each entry says why forwarding is right for that class.
/// Keep it short: every entry is a class of bodies that esgate does not check itself.
#[derive(Debug)]
struct AllowedDeferral {
    /// The `Defer` reason, exactly as `check_body` gives it.
    reason: &'static str,
    /// Why deferring is acceptable for these bodies.
    why: &'static str,
}

/// Deferrals allowed where the oracle decides.
const ALLOWED_DEFERRALS: &[AllowedDeferral] = &[
    AllowedDeferral {
        reason: "the body is UTF-16 or UTF-32, which Jackson reads with another parser",
        why: "Jackson reads these with its char-based parser (other locations and snippets); whether \
              Elasticsearch hands such bodies to Jackson intact is unverified (docs/connector-error.md, \
              \"What esgate forwards unchecked, and why\"), so Elasticsearch answers them itself",
    },
    AllowedDeferral {
        reason: "a field name holds byte 0xFF, which Jackson may match to a name it saw earlier",
        why: "Jackson's symbol table pads names with 0xFF bytes and is shared by every request of an \
              Elasticsearch node, so such a name may match a name seen in any earlier request: the \
              oracle starts each body with an empty table, a live node does not",
    },
];

// ===== configuration =====

/// The oracle's directory: `Oracle.java`, `cases.txt`, `expected/`.
const ORACLE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle");
/// The script that finds a JDK and the jars, compiles and runs the oracle.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/oracle");
/// Seed of the generator when `ESGATE_ORACLE_SEED` is not set.
const DEFAULT_SEED: u64 = 0x0e5_6a7e_c0de_5eed;
/// Bodies per dialect when `ESGATE_ORACLE_BODIES` is not set.
const DEFAULT_BODIES: u64 = 10_000;
/// Mismatches printed in full in a failure message.
const SHOWN: usize = 20;
/// Kinds of difference listed in a failure message.
const KINDS_SHOWN: usize = 30;
/// Time for an oracle's first answer (it may compile first).
const START_LIMIT: Duration = Duration::from_secs(600);
/// Time for every later answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// The build's target directory (`target/`, or `$CARGO_TARGET_DIR`): `CARGO_TARGET_TMPDIR` is
/// its `tmp/`.
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// The dialect esgate checks bodies as: the body dialect's own, unless `ESGATE_ORACLE_CHECK_AS`
/// names another (e.g. `9-c-2.21`), to see where that dialect's logic and this oracle differ.
fn checked_as(d: BodyDialect) -> Dialect {
    match std::env::var("ESGATE_ORACLE_CHECK_AS") {
        Ok(name) if !name.trim().is_empty() => Dialect::from_name(name.trim())
            .unwrap_or_else(|| panic!("ESGATE_ORACLE_CHECK_AS={name:?} is not a dialect name (e.g. 9-c-2.21)")),
        _ => d.dialect,
    }
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
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
        "body dialects without oracle tests: {} (add them to body_dialect_tests! in tests/oracle.rs, \
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

// ===== oracle files and answers =====

fn read_oracle_file(name: &str) -> String {
    let path = format!("{ORACLE_DIR}/{name}");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e} (scripts/oracle --regenerate writes the expected files)"))
}

/// The cases of `cases.txt`: (comment, body).
fn read_cases() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut label = String::new();
    for (i, line) in read_oracle_file("cases.txt").lines().enumerate() {
        if let Some(comment) = line.strip_prefix('#') {
            label = comment.trim().to_owned();
        } else {
            let body = decode_case(line).unwrap_or_else(|e| panic!("cases.txt line {}: {e}", i + 1));
            out.push((label.clone(), body));
        }
    }
    out
}

/// The body of one `cases.txt` line: base64, empty for the empty body.
fn decode_case(line: &str) -> Result<Vec<u8>, String> {
    let trimmed = line.trim();
    BASE64
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|e| format!("not base64: {e}"))
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

/// One oracle answer line, without its newline.
#[derive(Debug)]
enum Answer<'a> {
    Ok(&'a [u8]),
    Err(&'a [u8]),
    Unmodelled,
    Unreadable,
}

fn parse_answer(line: &[u8]) -> Answer<'_> {
    if let Some(literal) = line.strip_prefix(b"OK ") {
        Answer::Ok(literal)
    } else if let Some(json) = line.strip_prefix(b"ERR ") {
        Answer::Err(json)
    } else if line.starts_with(b"UNMODELLED") {
        Answer::Unmodelled
    } else {
        Answer::Unreadable
    }
}

// ===== the live oracles: one process per dialect, shared by the tests of this binary =====

/// A dialect's oracle, started on first use.
enum Slot {
    Ready(OracleProcess),
    /// The jar is not available here: the reason.
    Unavailable(String),
    /// It could not be started, or stopped answering: why.
    Broken(String),
}

/// Runs `f` on the oracle of `d`, starting it on first use. `None` when the dialect is skipped
/// (its jar is missing; this panics instead under `CI=true`).
fn with_oracle<R>(
    d: BodyDialect,
    f: impl FnOnce(&mut OracleProcess) -> Result<R, String>,
) -> Option<Result<R, String>> {
    type Shared = Arc<Mutex<Option<Slot>>>;
    static SLOTS: Mutex<Vec<(String, Shared)>> = Mutex::new(Vec::new());
    let name = d.name();
    let shared: Shared = {
        let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.iter().find(|(n, _)| *n == name) {
            Some((_, s)) => s.clone(),
            None => {
                let s: Shared = Arc::default();
                slots.push((name.clone(), s.clone()));
                s
            }
        }
    };
    let mut slot = shared.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_none() {
        let started = start_oracle(d);
        if let Slot::Unavailable(reason) = &started {
            record_skip(d, reason);
        }
        *slot = Some(started);
    }
    match slot.as_mut().expect("set above") {
        Slot::Ready(oracle) => {
            let result = f(oracle);
            if let Err(e) = &result {
                *slot = Some(Slot::Broken(e.clone()));
            }
            Some(result)
        }
        Slot::Unavailable(reason) => {
            let line = skip_line(d, reason);
            drop(slot);
            if in_ci() {
                panic!(
                    "{line}\nCI=true: every dialect must be tested; make its jar available (tests/oracle/README.md)"
                );
            }
            // Straight to the process's stderr: the test harness would hide `eprintln!` of a
            // passing test.
            let _ = writeln!(std::io::stderr(), "{line}");
            None
        }
        Slot::Broken(why) => {
            let why = why.clone();
            drop(slot);
            panic!("oracle {name} is not usable: {why}");
        }
    }
}

fn skip_line(d: BodyDialect, reason: &str) -> String {
    format!("SKIPPED dialect {} ({}): {reason}", d.name(), d.members())
}

/// Appends the skip to `target/skipped-dialects.txt` (once per dialect and test binary).
fn record_skip(d: BodyDialect, reason: &str) {
    let path = target_dir().join("skipped-dialects.txt");
    let line = skip_line(d, reason);
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = written {
        eprintln!("(could not append to {}: {e})", path.display());
    }
}

/// Asks `scripts/oracle` for the dialect's jar, then starts the oracle on it.
fn start_oracle(d: BodyDialect) -> Slot {
    let version = d.jar_version();
    let probe = match Command::new(SCRIPT).args(["--jar-path", version]).output() {
        Ok(out) => out,
        Err(e) => return Slot::Broken(format!("cannot run {SCRIPT}: {e}")),
    };
    let probe_err = String::from_utf8_lossy(&probe.stderr).into_owned();
    match probe.status.code() {
        Some(0) => {}
        Some(3) => {
            let reason = probe_err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("jar not available")
                .trim_start_matches("scripts/oracle: ")
                .to_owned();
            return Slot::Unavailable(reason);
        }
        _ => {
            return Slot::Broken(format!(
                "{SCRIPT} --jar-path {version} failed ({}):\n{probe_err}",
                probe.status
            ))
        }
    }
    let mut child = match Command::new(SCRIPT)
        .args(["--jackson", version, "--wrapping", &d.wrapping_flag()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Slot::Broken(format!("cannot start {SCRIPT}: {e}")),
    };
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = Arc::new(Mutex::new(String::new()));
    let log_writer = log.clone();
    let name = d.name();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[oracle {name}] {line}");
            let mut log = log_writer.lock().unwrap_or_else(PoisonError::into_inner);
            log.push_str(&line);
            log.push('\n');
        }
    });
    let (tx, answers) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 16, stdout);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    Slot::Ready(OracleProcess {
        child,
        stdin,
        answers,
        answered: 0,
        log,
    })
}

/// One running oracle. It lives as long as the test binary: when the binary exits, its stdin
/// closes and the oracle ends.
struct OracleProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: Receiver<Vec<u8>>,
    answered: usize,
    log: Arc<Mutex<String>>,
}

impl OracleProcess {
    /// Sends `lines` (base64 bodies or `#` comments) and returns one answer line for each.
    fn ask(&mut self, lines: &[String]) -> Result<Vec<Vec<u8>>, String> {
        let OracleProcess {
            child,
            stdin,
            answers,
            answered,
            log,
        } = self;
        let stdin = stdin.as_mut().ok_or("its input is closed")?;
        std::thread::scope(|scope| {
            scope.spawn(move || {
                let mut w = BufWriter::with_capacity(1 << 16, stdin);
                for line in lines {
                    if w.write_all(line.as_bytes()).and_then(|()| w.write_all(b"\n")).is_err() {
                        return; // the oracle is gone; the reader below says so
                    }
                }
                let _ = w.flush();
            });
            let mut out = Vec::with_capacity(lines.len());
            for (i, line) in lines.iter().enumerate() {
                let limit = if *answered == 0 { START_LIMIT } else { ANSWER_LIMIT };
                match answers.recv_timeout(limit) {
                    Ok(answer) => {
                        out.push(answer);
                        *answered += 1;
                    }
                    Err(e) => {
                        let what = match e {
                            RecvTimeoutError::Timeout => format!("no answer within {}s", limit.as_secs()),
                            RecvTimeoutError::Disconnected => "it stopped".to_owned(),
                        };
                        // Killing it also unblocks the writer, so the scope can end.
                        let _ = child.kill();
                        let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                        std::thread::sleep(Duration::from_millis(200)); // let its stderr arrive
                        let log = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
                        return Err(format!(
                            "{what} ({status}) at input line {} of {} (base64 {})\n--- its stderr ---\n{log}---",
                            i + 1,
                            lines.len(),
                            clip(line, 300)
                        ));
                    }
                }
            }
            Ok(out)
        })
    }
}

// ===== comparison and report =====

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
    /// esgate defers a body the oracle decides, for a reason not in [`ALLOWED_DEFERRALS`].
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
            Category::Deferred => "DEFERRED where the oracle decides (not in ALLOWED_DEFERRALS)",
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
    AllowedDeferral(&'static str),
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
        (Answer::Unmodelled, BodyVerdict::Defer(_)) => Outcome::Agree,
        (Answer::Unmodelled, _) => Outcome::Mismatch(Category::DecidesUnmodelled),
        (Answer::Ok(_) | Answer::Err(_), BodyVerdict::Defer(reason)) => {
            match ALLOWED_DEFERRALS.iter().find(|a| a.reason == *reason) {
                Some(allowed) => Outcome::AllowedDeferral(allowed.reason),
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
        Ok(BodyVerdict::Defer(reason)) => format!("DEFER {reason:?}").into_bytes(),
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

struct Report {
    dialect: BodyDialect,
    /// What `check_body` is given (see [`checked_as`]).
    checked_as: Dialect,
    title: String,
    file: PathBuf,
    checked: usize,
    agreed: usize,
    oracle_kinds: BTreeMap<&'static str, usize>,
    error_shapes: BTreeMap<String, usize>,
    allowed: BTreeMap<&'static str, usize>,
    mismatches: BTreeMap<Category, usize>,
    /// Mismatches by (category, oracle shape, esgate shape).
    kinds: BTreeMap<(Category, String, String), Kind>,
    /// The first mismatches, in full.
    shown: Vec<String>,
    /// Every mismatch, in the oracle's input format.
    replay: String,
    generator_problem: String,
}

impl Report {
    fn new(dialect: BodyDialect, title: &str, file_name: &str) -> Self {
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
    fn record(&mut self, label: &str, body: &[u8], answer: &[u8]) {
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
            Outcome::AllowedDeferral(reason) => {
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

    fn coverage(&self) -> String {
        let kinds: Vec<String> = self.oracle_kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "oracle answers: {}; {} distinct error shapes (root cause type and message start)",
            kinds.join(", "),
            self.error_shapes.len()
        )
    }

    /// Panics with the whole report if anything disagreed; otherwise removes an old mismatch file.
    fn finish(self, footer: &str) {
        let failed: usize = self.mismatches.values().sum();
        if failed == 0 {
            let _ = std::fs::remove_file(&self.file);
            if self.generator_problem.is_empty() {
                return;
            }
        }
        let mut msg = format!(
            "{}: {} bodies, {} agree, {} allowed deferrals, {failed} MISMATCHES\n{}\n",
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
                "allowed deferrals: none ({} in ALLOWED_DEFERRALS)",
                ALLOWED_DEFERRALS.len()
            );
        } else {
            msg.push_str("allowed deferrals (not failures):\n");
            for (reason, n) in &self.allowed {
                let why = ALLOWED_DEFERRALS
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

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &s[..end], s.len() - end)
}

// ===== the body generator =====

/// splitmix64: small, fast, and the same sequence everywhere for one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        lo + self.below(hi_inclusive - lo + 1)
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers, literals and other values to put where a value goes.
fn replacement_values() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        // numbers, valid and not
        "-",
        "01",
        "1.",
        "1e",
        ".5",
        "+1",
        "NaN",
        "Infinity",
        "-Infinity",
        "+Infinity",
        "nan",
        "1e+",
        "1e-",
        "-0",
        "0",
        "1.5",
        "-3",
        "1E400",
        "0x10",
        "1_000",
        "00",
        "-01",
        "1.e1",
        "--1",
        "0.0e0",
        "1e5",
        "-1.5E-7",
        "2.",
        "-.5",
        "123456789012345678901234567890", // literals, valid and not
        "tru",
        "nul",
        "falsey",
        "true",
        "false",
        "null",
        "nulll",
        "t",
        "n",
        "f",
        "True",
        "NULL",
        "undefined",
        "truex",
        "null1",
        "fals", // other values
        "{}",
        "[]",
        "[",
        "{",
        "[1,2]",
        "{\"a\":1}",
        "[[[[",
        "{\"a\"",
        "\"\"",
        "\"x\"",
        "\"",
        "'x'",
        "\"\\u12\"",
        "\"\\q\"",
        "\"a\\\"b\"",
        "\"\\uD800\"",
        "\"\\uDC00\\uD800\"",
        "\"\\ud83d\\ude00\"",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let digits = |n: usize| "1".repeat(n);
    v.push(digits(1000).into_bytes());
    v.push(digits(1001).into_bytes());
    v.push(format!("-{}", digits(1000)).into_bytes());
    v.push(format!("-{}", digits(999)).into_bytes());
    v.push(format!("0.{}", digits(1000)).into_bytes());
    v.push(format!("1e{}", digits(1000)).into_bytes());
    v.push(format!("{}.5", digits(999)).into_bytes());
    v
}

/// Field names to put where a name goes (already quoted, or not).
const KEYS: &[&str] = &[
    "\"error\"",
    "\"error\"",
    "\"error\"",
    "\"erro\"",
    "\"Error\"",
    "\"errors\"",
    "\"ERROR\"",
    "\"foo\"",
    "\"\"",
    "\"\u{e9}\"",
    "\"\u{1F600}\"",
    "\"err\\u006fr\"",
    "\"error \"",
    "\"e\"",
    "\"\\ud800\"",
    "\"er\\\"ror\"",
    "\"eror\"",
    "\"rror\"",
    "error",
    "'error'",
    "\"error",
];

const COMMENTS: &[&str] = &[
    "/**/",
    "/* c */",
    "/* \u{e9} */",
    "// c\n",
    "//\n",
    "//\r\n",
    "// c\r",
    "/*",
    "/* open",
    "//",
    "/",
    "/*/",
    "*/",
    "/* * */",
    "/*/*/",
    "/* // */",
    "# hash\n",
    "/**/ /**/",
    "/*\n*/",
    "/*\r\n*/",
];

const LAYOUT: &[&str] = &[
    " ", "\n", "\r\n", "\t", "\r", "  ", "/* c */", "/**/", "// c\n", "\n\n", " \t ", "//\r",
];

const WHITESPACE_AND_CONTROL: &[&[u8]] = &[
    b" ", b"\r", b"\n", b"\r\n", b"\t", b"\n\r", b"\x00", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x1f",
    b"\x7f", b"   ", b"\r\r",
];

/// Unicode and invalid UTF-8.
const UNICODE: &[&[u8]] = &[
    "\u{e9}".as_bytes(),
    "\u{80}".as_bytes(),
    "\u{7ff}".as_bytes(),
    "\u{20ac}".as_bytes(),
    "\u{4e2d}".as_bytes(),
    "\u{800}".as_bytes(),
    "\u{feff}".as_bytes(),
    "\u{ffff}".as_bytes(),
    "\u{1F600}".as_bytes(),
    "\u{10ffff}".as_bytes(),
    "\u{10000}".as_bytes(),
    b"\x80",
    b"\xbf",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xc3",
    b"\xc3\x28",
    b"\xe2\x82",
    b"\xe2\x28\xa1",
    b"\xe0\x80\x80",
    b"\xf0\x9f\x98",
    b"\xf0\x28\x8c\x28",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xed\xb0\x80",
    b"\xed\xa0\xbd\xed\xb8\x80",
];

/// Contents of generated strings (between the quotes).
fn string_pieces() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "abc",
        " ",
        "Houston, we have a problem!",
        "x",
        "\\\"",
        "\\\\",
        "\\/",
        "\\b",
        "\\f",
        "\\n",
        "\\r",
        "\\t",
        "\\u0000",
        "\\u001F",
        "\\u007f",
        "\\u00E9",
        "\\u20ac",
        "\\uD83D\\uDE00",
        "\\ud800",
        "\\uDFFF",
        "\\uDC00\\uD800",
        "\\uFFFE",
        "'",
        "/* not a comment */",
        "// neither",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.extend(UNICODE[..11].iter().map(|u| u.to_vec()));
    v
}

/// Long string contents, around the 500-byte cut of Jackson's snippet.
fn long_piece(rng: &mut Rng) -> Vec<u8> {
    match rng.below(7) {
        0 => "a".repeat(rng.range(600, 1200)).into_bytes(),
        1 => "\u{e9}".repeat(rng.range(300, 500)).into_bytes(),
        2 => "\u{20ac}".repeat(rng.range(200, 350)).into_bytes(),
        3 => "\u{1F600}".repeat(rng.range(150, 250)).into_bytes(),
        4 => format!("{}\u{e9}{}", "a".repeat(rng.range(485, 492)), "b".repeat(100)).into_bytes(),
        5 => format!("{}\u{1F600}{}", "a".repeat(rng.range(484, 492)), "b".repeat(100)).into_bytes(),
        _ => "\\n".repeat(rng.range(300, 400)).into_bytes(),
    }
}

struct Generator {
    rng: Rng,
    seeds: Vec<(String, Vec<u8>)>,
    values: Vec<Vec<u8>>,
    pieces: Vec<Vec<u8>>,
}

impl Generator {
    fn new(seed: u64) -> Self {
        let mut seeds = Vec::new();
        for (label, body) in read_cases() {
            seeds.push((format!("cases.txt: {label}"), body));
        }
        seeds.extend(handcrafted());
        Generator {
            rng: Rng(seed),
            seeds,
            values: replacement_values(),
            pieces: string_pieces(),
        }
    }

    /// `count` labelled bodies: every seed as it is, then documents and mutated seeds.
    fn bodies(&mut self, count: usize) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = self.seeds.iter().take(count).cloned().collect();
        while out.len() < count {
            let n = out.len();
            let (mut label, mut body, mutations) = if self.rng.percent(50) {
                let doc = self.document();
                let mutations = if self.rng.percent(50) { 0 } else { self.mutation_count() };
                (format!("#{n} generated document"), doc, mutations)
            } else {
                let (label, body) = self.rng.pick(&self.seeds).clone();
                (format!("#{n} {label}"), body, self.mutation_count())
            };
            for _ in 0..mutations {
                let name = self.mutate(&mut body);
                label.push_str(" + ");
                label.push_str(name);
            }
            out.push((label, body));
        }
        out
    }

    fn mutation_count(&mut self) -> usize {
        match self.rng.below(10) {
            0..=4 => 1,
            5..=7 => 2,
            _ => self.rng.range(3, 5),
        }
    }

    // ----- structured documents -----

    fn layout(&mut self, out: &mut Vec<u8>) {
        if self.rng.percent(55) {
            return;
        }
        for _ in 0..self.rng.range(1, 3) {
            out.extend_from_slice(self.rng.pick(LAYOUT).as_bytes());
        }
    }

    fn string(&mut self, out: &mut Vec<u8>) {
        out.push(b'"');
        if self.rng.percent(6) {
            out.extend(long_piece(&mut self.rng));
        } else {
            for _ in 0..self.rng.range(0, 6) {
                let piece = self.rng.pick(&self.pieces).clone();
                out.extend(piece);
            }
        }
        out.push(b'"');
    }

    /// A body shaped like a connector-error request: mostly valid, sometimes with other fields,
    /// other values, several members, a BOM or bytes after the object.
    fn document(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.rng.percent(5) {
            out.extend_from_slice(b"\xef\xbb\xbf");
        }
        self.layout(&mut out);
        out.push(b'{');
        let members = match self.rng.below(100) {
            0..=7 => 0,
            8..=77 => 1,
            78..=92 => 2,
            _ => 3,
        };
        for i in 0..members {
            if i > 0 {
                self.layout(&mut out);
                out.push(b',');
            }
            self.layout(&mut out);
            if self.rng.percent(85) {
                out.extend_from_slice(b"\"error\"");
            } else {
                out.extend_from_slice(self.rng.pick(KEYS).as_bytes());
            }
            self.layout(&mut out);
            out.push(b':');
            self.layout(&mut out);
            match self.rng.below(100) {
                0..=64 => self.string(&mut out),
                65..=79 => out.extend_from_slice(b"null"),
                80..=89 => out.extend_from_slice(
                    self.rng
                        .pick(&[
                            "1",
                            "-2.5e3",
                            "true",
                            "false",
                            "{}",
                            "[\"a\"]",
                            "{\"a\":[1,{\"b\":null}]}",
                            "[[[]]]",
                        ])
                        .as_bytes(),
                ),
                _ => out.extend(self.rng.pick(&self.values).clone()),
            }
        }
        self.layout(&mut out);
        out.push(b'}');
        if self.rng.percent(15) {
            let trailing: &[&[u8]] = &[
                b" ",
                b"\n",
                b"}",
                b",",
                b"{\"a\":1}",
                b"trailing garbage",
                b"\xff\xfe",
                b"/*",
                b"//",
            ];
            let tail = *self.rng.pick::<&[u8]>(trailing);
            out.extend_from_slice(tail);
        }
        out
    }

    // ----- mutations -----

    /// Applies one mutation to `body` and returns its name.
    fn mutate(&mut self, body: &mut Vec<u8>) -> &'static str {
        let shape = Shape::of(body);
        match self.rng.below(120) {
            0..=13 => self.truncate(body, &shape),
            14..=21 => {
                for _ in 0..self.rng.range(1, 3) {
                    if !body.is_empty() {
                        let i = self.rng.below(body.len());
                        body[i] ^= 1 << self.rng.below(8);
                    }
                }
                "bit flips"
            }
            22..=27 => {
                if !body.is_empty() {
                    let i = self.rng.below(body.len());
                    body[i] = *self.rng.pick(b"{}[]:,\"'\\/*\n\r\t \x00\x7fen1-.eE+\xc3\xed\xff");
                }
                "byte replaced"
            }
            28..=33 => {
                let at = self.rng.range(0, body.len());
                let byte = if self.rng.percent(50) {
                    self.rng.next() as u8
                } else {
                    *self.rng.pick(b"{}[]:,\"\\/*\n")
                };
                body.insert(at, byte);
                "byte inserted"
            }
            34..=39 => {
                if !body.is_empty() {
                    let at = self.rng.below(body.len());
                    let n = self.rng.range(1, 3).min(body.len() - at);
                    body.drain(at..at + n);
                }
                "bytes deleted"
            }
            40..=49 => {
                let at = self.boundary(body, &shape);
                let comment = self.rng.pick(COMMENTS).as_bytes();
                splice_in(body, at, comment);
                "comment inserted"
            }
            50..=57 => {
                let at = if self.rng.percent(60) {
                    self.boundary(body, &shape)
                } else {
                    self.rng.range(0, body.len())
                };
                let ws = *self.rng.pick(WHITESPACE_AND_CONTROL);
                splice_in(body, at, ws);
                "whitespace/control inserted"
            }
            58..=67 => {
                let at = match self.inside_string(&shape) {
                    Some(at) if self.rng.percent(60) => at,
                    _ => self.rng.range(0, body.len()),
                };
                let u = *self.rng.pick(UNICODE);
                splice_in(body, at, u);
                "unicode inserted"
            }
            68..=73 => {
                let long = long_piece(&mut self.rng);
                match self.inside_string(&shape) {
                    Some(at) if self.rng.percent(70) => splice_in(body, at, &long),
                    _ => {
                        let at = self.boundary(body, &shape);
                        let spaces = vec![b' '; self.rng.range(490, 700)];
                        splice_in(body, at, &spaces);
                    }
                }
                "long run inserted"
            }
            74..=77 => {
                let quotes: Vec<usize> = (0..body.len())
                    .filter(|&i| body[i] == b'"' || body[i] == b'\'')
                    .collect();
                if self.rng.percent(25) {
                    for &i in &quotes {
                        body[i] = if body[i] == b'"' { b'\'' } else { b'"' };
                    }
                    "all quotes swapped"
                } else {
                    if !quotes.is_empty() {
                        let i = *self.rng.pick(&quotes);
                        body[i] = if body[i] == b'"' { b'\'' } else { b'"' };
                    }
                    "one quote swapped"
                }
            }
            78..=83 => {
                let targets: Vec<usize> = shape.colons.iter().chain(&shape.commas).copied().collect();
                if !targets.is_empty() {
                    let i = *self.rng.pick(&targets);
                    match self.rng.below(4) {
                        0 => body[i] = if body[i] == b':' { b'=' } else { b';' },
                        _ => {
                            body.remove(i);
                        }
                    }
                }
                "comma/colon removed"
            }
            84..=91 => {
                let members: &[&[u8]] = &[
                    b"\"error\":\"dup\"",
                    b"\"error\":null",
                    b"\"error\":1",
                    b"\"foo\":1",
                    b"\"Error\":\"x\"",
                    b"\"erro\":[1]",
                    b"\"error\" : \"again\"",
                ];
                let member = *self.rng.pick(members);
                match (shape.open_braces.first(), shape.close_braces.last()) {
                    (Some(&open), _) if self.rng.percent(50) => splice_in(body, open + 1, &[member, b","].concat()),
                    (_, Some(&close)) => splice_in(body, close, &[b",", member].concat()),
                    _ => body.extend_from_slice(member),
                }
                "field added"
            }
            92..=105 => {
                let value = self.rng.pick(&self.values).clone();
                let spans = shape.value_spans(body);
                if spans.is_empty() {
                    splice_in(body, self.rng.range(0, body.len()), &value);
                } else {
                    let (start, end) = *self.rng.pick(&spans);
                    body.splice(start..end, value);
                }
                "value replaced"
            }
            106..=110 => {
                let key = self.rng.pick(KEYS).as_bytes();
                let keys = shape.key_spans(body);
                if !keys.is_empty() {
                    let (start, end) = *self.rng.pick(&keys);
                    body.splice(start..end, key.iter().copied());
                }
                "key replaced"
            }
            111..=115 => {
                let (_, other) = self.rng.pick(&self.seeds).clone();
                let cut = self.rng.range(0, body.len());
                let from = self.rng.range(0, other.len());
                body.truncate(cut);
                body.extend_from_slice(&other[from..]);
                "spliced with another seed"
            }
            _ => {
                let at = self.rng.range(0, body.len());
                let len = self.rng.range(1, 16).min(body.len() - at);
                let chunk = body[at..at + len].to_vec();
                splice_in(body, at, &chunk);
                "chunk duplicated"
            }
        }
    }

    /// Cuts the body at a position of some kind: anywhere, after a structural byte, inside a
    /// string, inside an escape, inside a multi-byte character, inside a comment, near the end.
    fn truncate(&mut self, body: &mut Vec<u8>, shape: &Shape) -> &'static str {
        let positions = |pred: &dyn Fn(usize) -> bool| -> Vec<usize> { (0..body.len()).filter(|&i| pred(i)).collect() };
        let (name, candidates): (&'static str, Vec<usize>) = match self.rng.below(7) {
            0 => ("truncated anywhere", Vec::new()),
            1 => (
                "truncated after a structural byte",
                positions(&|i| b"{:,[".contains(&body[i]))
                    .iter()
                    .map(|i| i + 1)
                    .collect(),
            ),
            2 => ("truncated inside a string", self.inside_strings(shape)),
            3 => (
                "truncated inside an escape",
                positions(&|i| body[i] == b'\\')
                    .iter()
                    .map(|i| i + 1 + self.rng.below(4))
                    .collect(),
            ),
            4 => (
                "truncated inside a UTF-8 character",
                positions(&|i| body[i] >= 0xc0).iter().map(|i| i + 1).collect(),
            ),
            5 => (
                "truncated inside a comment",
                positions(&|i| body[i] == b'/' || body[i] == b'*')
                    .iter()
                    .map(|i| i + 1)
                    .collect(),
            ),
            _ => (
                "truncated near the end",
                (body.len().saturating_sub(3)..body.len()).collect(),
            ),
        };
        let candidates: Vec<usize> = candidates.into_iter().filter(|&i| i <= body.len()).collect();
        let at = if candidates.is_empty() {
            self.rng.range(0, body.len())
        } else {
            *self.rng.pick(&candidates)
        };
        body.truncate(at);
        name
    }

    /// A position next to a structural byte (where layout goes), or anywhere.
    fn boundary(&mut self, body: &[u8], shape: &Shape) -> usize {
        let mut b: Vec<usize> = shape.structural.iter().flat_map(|&i| [i, i + 1]).collect();
        b.push(0);
        b.push(body.len());
        *self.rng.pick(&b)
    }

    fn inside_strings(&mut self, shape: &Shape) -> Vec<usize> {
        shape
            .strings
            .iter()
            .filter(|(s, e)| e > s)
            .map(|&(s, e)| s + 1 + self.rng.below(e - s))
            .collect()
    }

    fn inside_string(&mut self, shape: &Shape) -> Option<usize> {
        let inside = self.inside_strings(shape);
        if inside.is_empty() {
            None
        } else {
            Some(*self.rng.pick(&inside))
        }
    }
}

fn splice_in(body: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let at = at.min(body.len());
    body.splice(at..at, bytes.iter().copied());
}

/// Where the strings and structural bytes of a (possibly broken) body are, by a quick scan that
/// knows strings and escapes but not comments.
struct Shape {
    /// `(opening quote, closing quote or end)` of every string.
    strings: Vec<(usize, usize)>,
    structural: Vec<usize>,
    colons: Vec<usize>,
    commas: Vec<usize>,
    open_braces: Vec<usize>,
    close_braces: Vec<usize>,
}

impl Shape {
    fn of(body: &[u8]) -> Shape {
        let mut s = Shape {
            strings: Vec::new(),
            structural: Vec::new(),
            colons: Vec::new(),
            commas: Vec::new(),
            open_braces: Vec::new(),
            close_braces: Vec::new(),
        };
        let mut i = 0;
        while i < body.len() {
            match body[i] {
                b'"' => {
                    let start = i;
                    i += 1;
                    while i < body.len() && body[i] != b'"' {
                        i += if body[i] == b'\\' { 2 } else { 1 };
                    }
                    s.strings.push((start, i.min(body.len())));
                }
                c @ (b'{' | b'}' | b'[' | b']' | b':' | b',') => {
                    s.structural.push(i);
                    match c {
                        b':' => s.colons.push(i),
                        b',' => s.commas.push(i),
                        b'{' => s.open_braces.push(i),
                        b'}' => s.close_braces.push(i),
                        _ => {}
                    }
                }
                _ => {}
            }
            i += 1;
        }
        s
    }

    /// `start..end` of the value after each colon.
    fn value_spans(&self, body: &[u8]) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        for &colon in &self.colons {
            let mut start = colon + 1;
            while start < body.len() && b" \t\r\n".contains(&body[start]) {
                start += 1;
            }
            let end = if let Some(&(_, close)) = self.strings.iter().find(|(open, _)| *open == start) {
                (close + 1).min(body.len())
            } else {
                let mut end = start;
                while end < body.len() && !b",}] \t\r\n/".contains(&body[end]) {
                    end += 1;
                }
                end
            };
            spans.push((start, end));
        }
        spans
    }

    /// `start..end` of each string followed by a colon (a field name), quotes included.
    fn key_spans(&self, body: &[u8]) -> Vec<(usize, usize)> {
        self.strings
            .iter()
            .filter(|&&(_, close)| {
                body.get(close + 1..)
                    .and_then(|rest| rest.iter().find(|b| !b" \t\r\n".contains(b)))
                    .is_some_and(|b| *b == b':')
            })
            .map(|&(open, close)| (open, (close + 1).min(body.len())))
            .collect()
    }
}

/// Seeds beyond `cases.txt`: valid bodies of many shapes, and near misses.
fn handcrafted() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut add = |name: &'static str, body: &[u8]| v.push((name, body.to_vec()));
    add("plain", br#"{"error":"x"}"#);
    add("null", br#"{"error":null}"#);
    add("empty string", br#"{"error":""}"#);
    add("README example", br#"{"error":"Houston, we have a problem!"}"#);
    add(
        "long ASCII 600",
        format!(r#"{{"error":"{}"}}"#, "a".repeat(600)).as_bytes(),
    );
    add(
        "long ASCII 1500",
        format!(r#"{{"error":"{}"}}"#, "abcdefghij".repeat(150)).as_bytes(),
    );
    add(
        "long 2-byte 800",
        format!(r#"{{"error":"{}"}}"#, "\u{e9}".repeat(400)).as_bytes(),
    );
    add(
        "long 3-byte",
        format!(r#"{{"error":"{}"}}"#, "\u{20ac}".repeat(300)).as_bytes(),
    );
    add(
        "long 4-byte",
        format!(r#"{{"error":"{}"}}"#, "\u{1F680}".repeat(200)).as_bytes(),
    );
    add(
        "2-byte char across the 500-byte cut",
        format!(r#"{{"error":"{}{}"}}"#, "a".repeat(489), "\u{e9}".repeat(60)).as_bytes(),
    );
    add(
        "4-byte char across the 500-byte cut",
        format!(r#"{{"error":"{}{}"}}"#, "a".repeat(488), "\u{1F600}".repeat(40)).as_bytes(),
    );
    add(
        "unicode",
        "{\"error\":\"h\u{e9}llo w\u{f6}rld \u{2713} \u{1F600} \u{4e2d}\u{6587} \u{10ffff}\"}".as_bytes(),
    );
    add(
        "every escape",
        br#"{"error":"\" \\ \/ \b \f \n \r \t \u0000 \u001f \u007F \u00e9 \u20AC \uD83D\uDE00 \uFFFF \uFEFF"}"#,
    );
    add(
        "lone surrogate escapes",
        br#"{"error":"\uD800 \uDBFF \uDC00 \uDFFF \uDC00\uD800 \ud83d"}"#,
    );
    add("escaped field name", br#"{"\u0065rror":"x"}"#);
    add("escaped quote in field name", br#"{"err\"or":"x"}"#);
    add(
        "comments everywhere",
        b"/*a*/{/*b*/\"error\"/*c*/:/*d*/\"x\"/*e*/}/*f*/",
    );
    add(
        "line comments everywhere",
        b"//a\n{//b\n\"error\"//c\n://d\n\"x\"//e\n}//f",
    );
    add(
        "tricky comments",
        b"/* ** / */{/*/ */\"error\":/***/\"x\"/* \"error\":1 */}",
    );
    add("comment with CR", b"{// c\r\"error\":\"x\"}");
    add("unterminated comment after value", b"{\"error\":\"x\"/* open");
    add("line comment to end", b"{\"error\":\"x\"// no newline");
    add("BOM", b"\xef\xbb\xbf{\"error\":\"x\"}");
    add("BOM then comment", b"\xef\xbb\xbf/* c */{\"error\":null}");
    add("double BOM", b"\xef\xbb\xbf\xef\xbb\xbf{\"error\":\"x\"}");
    add("BOM only", b"\xef\xbb\xbf");
    add("BOM in the middle", b"{\xef\xbb\xbf\"error\":\"x\"}");
    add("CR LF TAB layout", b"\r\n{\r\n\t\"error\"\t:\r\n\t\"x\"\r\n}\r\n");
    add("CR only lines", b"{\r\"error\":\r1}");
    add("CR LF lines, error on line 3", b"{\r\n\r\n\"error\":1}");
    add("LF CR", b"{\n\r\"error\":1}");
    add("CR CR LF", b"{\r\r\n\"error\":true}");
    add("many lines then unknown field", b"{\n\n\n\n\n\n\n\n\n\n\"foo\":1}");
    add("tabs before unknown field", b"{\t\t\t\"foo\":1}");
    add("nested object value", br#"{"error":{"a":[1,{"b":null}]}}"#);
    add("nested arrays value", br#"{"error":[[[]]]}"#);
    let (digits_1000, digits_1001) = ("7".repeat(1000), "7".repeat(1001));
    for (name, n) in [
        ("number 0", "0"),
        ("number -0", "-0"),
        ("number 1.5", "1.5"),
        ("number -1.5e10", "-1.5e10"),
        ("number 1E+2", "1E+2"),
        ("number 1e-2", "1e-2"),
        ("big integer", "123456789012345678901234567890"),
        ("number 1e400", "1e400"),
        ("number 0.0", "0.0"),
        ("1000 digits", digits_1000.as_str()),
        ("1001 digits", digits_1001.as_str()),
        ("true", "true"),
        ("false", "false"),
    ] {
        v.push((name, format!(r#"{{"error":{n}}}"#).into_bytes()));
    }
    let mut add = |name: &'static str, body: &[u8]| v.push((name, body.to_vec()));
    add("two fields", br#"{"error":"x","foo":1}"#);
    add("unknown field first", br#"{"foo":1,"error":"x"}"#);
    add("duplicate error", br#"{"error":"x","error":"y"}"#);
    add("duplicate null", br#"{"error":null,"error":null}"#);
    add("duplicate unknown", br#"{"foo":1,"foo":2}"#);
    add("three fields", br#"{"a":1,"b":2,"c":3}"#);
    add(
        "unknown after long value",
        format!(r#"{{"error":"{}","foo":1}}"#, "z".repeat(700)).as_bytes(),
    );
    add("trailing brace", br#"{"error":"x"}}"#);
    add("trailing bracket", br#"{"error":"x"}["#);
    add("trailing open comment", br#"{"error":"x"} /*"#);
    add("root array", b"[]");
    add("root string", b"\"x\"");
    add("root number", b"1");
    add("root minus", b"-");
    add("root tru", b"tru");
    add("root nul", b"nul");
    add("root space", b" ");
    add("root tab", b"\t");
    add("root NUL byte", b"\x00");
    add("empty object with spaces", b"{ }");
    add("UTF-16BE without BOM", &utf16(r#"{"error":"x"}"#, true));
    add("UTF-16LE without BOM", &utf16(r#"{"error":"x"}"#, false));
    add(
        "UTF-16BE with BOM",
        &[&b"\xfe\xff"[..], &utf16(r#"{"error":"x"}"#, true)].concat(),
    );
    add("UTF-16LE invalid", &utf16(r#"{"error":1}"#, false));
    add("UTF-32BE", &utf32(r#"{"error":"x"}"#));
    add("UTF-32BE invalid", &utf32(r#"{"foo":"x"}"#));
    v.into_iter()
        .map(|(name, body)| (format!("seed: {name}"), body))
        .collect()
}

fn utf16(s: &str, big_endian: bool) -> Vec<u8> {
    s.encode_utf16()
        .flat_map(|u| if big_endian { u.to_be_bytes() } else { u.to_le_bytes() })
        .collect()
}

fn utf32(s: &str) -> Vec<u8> {
    s.chars().flat_map(|c| u32::from(c).to_be_bytes()).collect()
}
