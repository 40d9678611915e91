//! The real esgate binary, run as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wire::LIMIT;

/// The path of the esgate binary that Cargo built for this test run.
///
/// Cargo builds a package's binaries before its integration tests and gives their paths to the
/// test crate as `env!("CARGO_BIN_EXE_esgate")`, a compile-time value that a dependency such as
/// this crate does not see. So the path comes from the running test: `CARGO_BIN_EXE_esgate` in
/// its environment (set by `cargo test` from Cargo 1.94 on), else the binary beside its
/// directory (tests run as `<target>/<profile>/deps/<test>-<hash>`, the binary is
/// `<target>/<profile>/esgate`, whatever the target directory or `--target`). No test passes a
/// path. Panics if no binary is there (a test executable run by hand with an older Cargo's
/// separate `build.build-dir`).
pub fn binary_path() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_esgate") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test executable in <target>/<profile>/deps");
    let bin = profile_dir.join(format!("esgate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "no esgate binary at {} (run the tests with `cargo test`)",
        bin.display()
    );
    bin
}

/// The lines `stream` gives, on a channel (read by a thread of their own).
fn lines(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The esgate binary, running.
pub struct Binary {
    /// The process.
    pub child: Child,
    /// Its client listener.
    pub addr: SocketAddr,
    /// Its admin listener, if any.
    pub admin: Option<SocketAddr>,
    /// Log lines (stderr) after the start-up line arrive here.
    pub log: std::sync::mpsc::Receiver<String>,
    /// Lines written to stdout (audit events) arrive here.
    pub stdout: std::sync::mpsc::Receiver<String>,
    /// The log lines up to and including the start-up line.
    pub startup: Vec<String>,
    /// stdout when it is held unread (see [`Binary::start_holding_stdout`]): kept open, never
    /// read.
    _held: Option<std::process::ChildStdout>,
}

impl Binary {
    /// Starts the binary ([`binary_path`]) with `args` (and `--listen=127.0.0.1:0` unless given)
    /// and waits for its start-up line.
    ///
    /// The child's environment is this process's without any `ESGATE_*` variable or `RUST_LOG`,
    /// plus `env`: a developer's shell settings do not reach the test.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Self::spawn(args, env, true)
    }

    /// As [`Binary::start`], but nobody reads stdout: once the pipe is full, writes to it block.
    pub fn start_holding_stdout(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Self::spawn(args, env, false)
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], read_stdout: bool) -> Binary {
        let mut cmd = Command::new(binary_path());
        if !args.iter().any(|a| a.starts_with("--listen")) {
            cmd.arg("--listen=127.0.0.1:0");
        }
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("ESGATE_")) {
                cmd.env_remove(name);
            }
        }
        cmd.args(args).env_remove("RUST_LOG").envs(env.iter().copied());
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn esgate");
        let log = lines(child.stderr.take().expect("stderr"));
        let (stdout, held) = match child.stdout.take() {
            Some(out) if read_stdout => (lines(out), None),
            out => (std::sync::mpsc::channel().1, out),
        };
        let mut startup = Vec::new();
        let started = loop {
            match log.recv_timeout(LIMIT) {
                Ok(line) if line.contains("esgate started") => {
                    startup.push(line.clone());
                    break line;
                }
                Ok(line) => startup.push(line),
                Err(e) => {
                    let _ = child.kill();
                    panic!("esgate did not start: {e}");
                }
            }
        };
        let field = |name: &str| {
            started
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|v| v.trim_matches('"').parse::<SocketAddr>().ok())
        };
        let addr = field("listen=").expect("listen address in the start-up line");
        let admin = field("admin=");
        Binary {
            child,
            addr,
            admin,
            log,
            stdout,
            startup,
            _held: held,
        }
    }

    /// Sends `signal` (`HUP`, `TERM`, …).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// The next line on stdout.
    pub fn next_stdout(&self) -> String {
        self.stdout
            .recv_timeout(LIMIT)
            .unwrap_or_else(|e| panic!("no line on stdout: {e}"))
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Waits for a log line containing `text`.
    pub fn wait_log(&self, text: &str) -> String {
        loop {
            match self.log.recv_timeout(LIMIT) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no log line containing {text:?}: {e}"),
            }
        }
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("esgate did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
