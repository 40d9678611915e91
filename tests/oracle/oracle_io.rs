//! Running the oracle (`scripts/oracle` on `tests/oracle/Oracle.java`): one process per body
//! dialect, shared by the tests of this binary, or a recorded skip when its jar is missing; and
//! reading the oracle's files (`cases.txt`, `expected/`) and answers.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::report::clip;
use crate::BodyDialect;

// ===== configuration =====

/// The oracle's directory: `Oracle.java`, `cases.txt`, `expected/`.
const ORACLE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle");
/// The script that finds a JDK and the jars, compiles and runs the oracle.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/oracle");
/// Time for an oracle's first answer (it may compile first).
const START_LIMIT: Duration = Duration::from_secs(600);
/// Time for every later answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// The build's target directory (`target/`, or `$CARGO_TARGET_DIR`): `CARGO_TARGET_TMPDIR` is
/// its `tmp/`.
pub(crate) fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

// ===== oracle files and answers =====

pub(crate) fn read_oracle_file(name: &str) -> String {
    let path = format!("{ORACLE_DIR}/{name}");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e} (scripts/oracle --regenerate writes the expected files)"))
}

/// The cases of `cases.txt`: (comment, body).
pub(crate) fn read_cases() -> Vec<(String, Vec<u8>)> {
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
pub(crate) fn decode_case(line: &str) -> Result<Vec<u8>, String> {
    let trimmed = line.trim();
    BASE64
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .map_err(|e| format!("not base64: {e}"))
}

/// One oracle answer line, without its newline.
#[derive(Debug)]
pub(crate) enum Answer<'a> {
    Ok(&'a [u8]),
    Err(&'a [u8]),
    Unmodelled,
    Unreadable,
}

pub(crate) fn parse_answer(line: &[u8]) -> Answer<'_> {
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
pub(crate) fn with_oracle<R>(
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
pub(crate) struct OracleProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: Receiver<Vec<u8>>,
    answered: usize,
    log: Arc<Mutex<String>>,
}

impl OracleProcess {
    /// Sends `lines` (base64 bodies or `#` comments) and returns one answer line for each.
    pub(crate) fn ask(&mut self, lines: &[String]) -> Result<Vec<Vec<u8>>, String> {
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
