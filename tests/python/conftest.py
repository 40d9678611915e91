"""Fixtures: the real esgate binary in front of its development upstream, and official clients.

The binary is `ESGATE_BIN` (default `target/debug/esgate`, which `cargo test` builds), started as
`esgate --dev --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0`; its ports come from the start-up
line on stderr (`... esgate started listen=127.0.0.1:PORT admin=127.0.0.1:PORT ...`). It is stopped with SIGTERM at the end and must
exit 0 (graceful shutdown).
"""

import os
import queue
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 15
STARTED = re.compile(r"esgate started.*?\blisten=\"?(\d+\.\d+\.\d+\.\d+:\d+)")
ADMIN = re.compile(r"\badmin=\"?(\d+\.\d+\.\d+\.\d+:\d+)")


class Esgate:
    """A running esgate: its URL and the stderr lines read so far."""

    def __init__(self, url, admin_url, log):
        self.url = url
        self.admin_url = admin_url
        self.log = log

    def client(self, **options):
        """A new client for this esgate: no retries, bounded waits."""
        return Elasticsearch(self.url, request_timeout=10, max_retries=0, **options)


def run_esgate(*extra):
    """Starts the binary in front of its development upstream; yields an `Esgate`, then stops it."""
    binary = Path(os.environ.get("ESGATE_BIN") or REPO / "target" / "debug" / "esgate")
    if not binary.is_file():
        pytest.fail(f"no esgate binary at {binary}: run `cargo build` (or `cargo test`) first, or set ESGATE_BIN")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESGATE_") and k != "RUST_LOG"}
    proc = subprocess.Popen(
        [
            str(binary),
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--log-level",
            "info",
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    lines = queue.Queue()
    log = []

    def read_stderr():
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            log.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read_stderr, daemon=True).start()
    url = admin_url = None
    deadline = time.monotonic() + START_TIMEOUT_S
    while url is None:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        m = STARTED.search(line)
        if m:
            url = f"http://{m.group(1)}"
            a = ADMIN.search(line)
            admin_url = a and f"http://{a.group(1)}"
    if url is None:
        proc.kill()
        proc.wait()
        pytest.fail(
            f"{binary} did not log its start-up line within {START_TIMEOUT_S}s "
            f"(exit code {proc.returncode}); stderr:\n" + "\n".join(log)
        )
    try:
        yield Esgate(url, admin_url, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"esgate did not exit within {STOP_TIMEOUT_S}s of SIGTERM; stderr:\n" + "\n".join(log))
        if code != 0:
            pytest.fail(f"esgate exited with {code} after SIGTERM; stderr:\n" + "\n".join(log))




@pytest.fixture(scope="session")
def esgate():
    """esgate --dev: its development upstream reports the newest modelled version (9.5)."""
    yield from run_esgate()


@pytest.fixture(scope="session")
def esgate_92():
    """esgate --dev in front of a development upstream that reports Elasticsearch 9.2.0."""
    yield from run_esgate("--dev-version", "9.2.0")


@pytest.fixture
def es(esgate):
    client = esgate.client()
    yield client
    client.close()


@pytest.fixture
def connector(es):
    """A new connector's id, created through esgate."""
    connector_id = f"py-{uuid.uuid4().hex[:12]}"
    resp = es.connector.put(connector_id=connector_id, index_name=f"search-{connector_id}", name="python e2e")
    assert resp["result"] == "created"
    return connector_id
