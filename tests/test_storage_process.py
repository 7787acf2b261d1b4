"""Storage across real processes (SPEC 10): readers in another process see committed writes and
are not blocked by the writer; a SIGKILLed writer loses nothing it acknowledged."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chrnode.storage import KvSet, NodeDatabase, Reader, Writer, open_database
from chrnode.testing.storage import STREAM_BATCH, stream_key, stream_value

ROOT = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_S = 60.0


def child(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "chrnode.testing.storage", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_in_child(path: Path, key: str) -> bytes | None:
    proc = child("read", str(path), key)
    out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == 0, err.decode()
    text = out.decode().strip()
    return None if text == "-" else bytes.fromhex(text)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[NodeDatabase]:
    database = open_database(tmp_path / "node.sqlite")
    yield database
    database.shutdown()


def test_reader_in_another_process_sees_commits_and_is_not_blocked_by_the_writer(
    db: NodeDatabase, tmp_path: Path
) -> None:
    path = tmp_path / "node.sqlite"
    writer = Writer(db)
    writer.apply([KvSet("shared", b"v1")])
    assert read_in_child(path, "shared") == b"v1"
    # The writer is inside a transaction holding the write lock: the reader still answers at
    # once with the last committed value, never the uncommitted one.
    with db.atomic() as transaction:
        writer.apply([KvSet("shared", b"v2-uncommitted")])  # a savepoint inside the open transaction
        assert read_in_child(path, "shared") == b"v1"
        transaction.rollback()
    writer.apply([KvSet("shared", b"v3")])
    assert read_in_child(path, "shared") == b"v3"


def read_acks(proc: subprocess.Popen[bytes], want: int, timeout_s: float) -> list[int]:
    """Batch numbers the child acknowledged (complete lines only), until `want` of them or EOF."""
    assert proc.stdout is not None
    acks: list[int] = []
    buffer = b""
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while len(acks) < want:
            left = deadline - time.monotonic()
            assert left > 0, f"child acknowledged only {len(acks)} batches in {timeout_s} s"
            if not sel.select(timeout=left):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            acks.extend(int(line) for line in lines)
    return acks


def test_sigkill_of_the_writer_loses_no_acknowledged_commit(tmp_path: Path) -> None:
    path = tmp_path / "durable.sqlite"
    proc = child("write-stream", str(path))
    try:
        acks = read_acks(proc, want=150, timeout_s=CHILD_TIMEOUT_S)
        assert len(acks) >= 150, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-stream: the child writes as fast as it can
    proc.wait(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    # Whatever the child wrote to the pipe before dying was acknowledged too.
    acks += read_acks(proc, want=10**9, timeout_s=CHILD_TIMEOUT_S)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()
    assert acks == list(range(len(acks))), "acks arrive in order, one per batch"

    db = open_database(path)  # the kernel freed the dead writer's lock
    try:
        reader = Reader(db)
        for batch in acks:
            for index in range(STREAM_BATCH):
                assert reader.kv_get(stream_key(batch, index)) == stream_value(batch, index), (batch, index)
        # A batch is all or nothing: the one in flight at the kill is either whole or absent.
        after = len(acks)
        present = [reader.kv_get(stream_key(after, i)) is not None for i in range(STREAM_BATCH)]
        assert all(present) or not any(present)
    finally:
        db.shutdown()
