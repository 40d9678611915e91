//! The audit thread: takes events off the queue, writes their lines to the sinks.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};

use super::elasticsearch::{BulkConfig, BulkSink};
use super::{Auditor, Event, TextPolicy};
use crate::config::AuditConfig;
use crate::metrics::{AuditSink, Metrics};
use crate::tls::ClientTls;

/// How long events gather in the queue after a write-out: audit lines are at most this late.
const GATHER: Duration = Duration::from_millis(5);

/// The running audit thread.
#[derive(Debug)]
pub struct AuditThread {
    reopen: Arc<Notify>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AuditThread {
    /// Reopens the audit file (after log rotation moved it).
    pub fn reopen(&self) {
        self.reopen.notify_one();
    }

    /// Writes what is queued, delivers what the Elasticsearch sink holds (within its shutdown
    /// deadline), and stops the thread. Blocks the calling thread.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AuditThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Opens the sinks and starts the audit thread; `None` when no sink is configured.
///
/// # Errors
/// The audit file cannot be opened, or the thread cannot start.
pub fn start(
    config: &AuditConfig,
    tls: Option<&ClientTls>,
    metrics: Arc<Metrics>,
) -> io::Result<Option<(Auditor, AuditThread)>> {
    if !config.enabled() {
        return Ok(None);
    }
    let mut streams = Vec::new();
    if config.stdout {
        streams.push(Stream::Stdout(BufWriter::new(io::stdout())));
    }
    if let Some(path) = &config.file {
        let file = open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        streams.push(Stream::File {
            path: path.clone(),
            out: BufWriter::new(file),
        });
    }
    let (tx, rx) = mpsc::channel(config.queue_size);
    let auditor = Auditor::new(tx, config.all_requests, config.max_inspected_body, metrics.clone());
    let bulk = config.elasticsearch.as_ref().map(|es| BulkConfig {
        node: es.url.clone(),
        data_stream: es.data_stream.clone(),
        authorization: es.credentials.as_ref().and_then(|c| c.header()),
        batch_size: es.batch_size,
        flush_interval: es.flush_interval,
        buffer: es.buffer,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        max_backoff: Duration::from_secs(30),
        shutdown_deadline: Duration::from_secs(5),
        marker: auditor.own_write_marker(),
        tls: tls.cloned(),
    });
    let policy = TextPolicy {
        max_error_length: config.max_error_length,
        redact_error_secrets: config.redact_error_secrets,
    };
    let reopen = Arc::new(Notify::new());
    let (stop, stopped) = oneshot::channel();
    let writer = Writer {
        streams,
        policy,
        metrics,
    };
    let notify = reopen.clone();
    let thread = std::thread::Builder::new()
        .name("esgate-audit".into())
        .spawn(move || writer.run(rx, bulk, notify, stopped))?;
    Ok(Some((
        auditor,
        AuditThread {
            reopen,
            stop: Some(stop),
            thread: Some(thread),
        },
    )))
}

/// Appends, creating the file readable by its owner and group only (audit lines name users).
fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

enum Stream {
    Stdout(BufWriter<io::Stdout>),
    File { path: PathBuf, out: BufWriter<File> },
}

impl Stream {
    fn out(&mut self) -> &mut dyn Write {
        match self {
            Stream::Stdout(out) => out,
            Stream::File { out, .. } => out,
        }
    }
}

struct Writer {
    streams: Vec<Stream>,
    policy: TextPolicy,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        bulk: Option<BulkConfig>,
        reopen: Arc<Notify>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!(error = %e, "cannot start the audit runtime; audit events are dropped"),
        };
        rt.block_on(async move {
            let (sink, task) = match bulk {
                Some(config) => {
                    let (sink, task) = BulkSink::spawn(config, self.metrics.clone());
                    (Some(sink), Some(task))
                }
                None => (None, None),
            };
            let mut stopping = false;
            while !stopping {
                tokio::select! {
                    event = rx.recv() => match event {
                        Some(event) => {
                            self.write(&event, sink.as_ref());
                            // Whatever else is queued goes in the same write-out.
                            while let Ok(event) = rx.try_recv() {
                                self.write(&event, sink.as_ref());
                            }
                            self.flush();
                            // Let the next events gather: while this thread is not waiting in
                            // `recv`, queuing an event wakes nobody, so a busy gateway pays one
                            // wake-up and one write per window, not per request.
                            tokio::select! {
                                () = tokio::time::sleep(GATHER) => {}
                                _ = &mut stop => stopping = true,
                            }
                        }
                        None => break,
                    },
                    () = reopen.notified() => self.reopen(),
                    _ = &mut stop => stopping = true,
                }
            }
            if stopping {
                rx.close();
                while let Some(event) = rx.recv().await {
                    self.write(&event, sink.as_ref());
                }
            }
            self.flush();
            drop(sink);
            if let Some(task) = task {
                let _ = task.await;
            }
        });
    }

    fn write(&mut self, event: &Event, sink: Option<&BulkSink>) {
        let mut line = event.to_json(self.policy);
        line.push(b'\n');
        // One buffer for every sink: the `_bulk` sink takes it without the newline.
        let line = Bytes::from(line);
        if let Some(sink) = sink {
            sink.push(line.slice(..line.len() - 1));
        }
        for stream in &mut self.streams {
            match stream.out().write_all(&line) {
                Ok(()) => self.metrics.audit_written(AuditSink::Stream, 1),
                Err(e) => {
                    self.metrics.audit_dropped(AuditSink::Stream, 1);
                    tracing::warn!(error = %e, "cannot write an audit event");
                }
            }
        }
    }

    fn flush(&mut self) {
        for stream in &mut self.streams {
            if let Err(e) = stream.out().flush() {
                tracing::warn!(error = %e, "cannot write audit events");
            }
        }
    }

    /// Log rotation: the file was moved away; new lines go to a new file at the same path.
    fn reopen(&mut self) {
        self.flush();
        for stream in &mut self.streams {
            if let Stream::File { path, out } = stream {
                match open(path) {
                    Ok(file) => {
                        *out = BufWriter::new(file);
                        tracing::info!(file = %path.display(), "audit file reopened");
                    }
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "cannot reopen the audit file; still writing to the old one")
                    }
                }
            }
        }
    }
}
