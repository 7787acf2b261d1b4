"""The node's single log writer (chrnode.logsink): folding as a pure rule, and the writer fed by
real forked processes over its real socket pair, across rotation."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode import logsink
from chrnode.logsink import Folder, LogSink, SinkHandler

COUNT = 8000
KEYS = st.sampled_from([("ERROR", "a", "boom"), ("ERROR", "a", "bang"), ("WARNING", "b", "boom")])


@given(st.lists(st.tuples(KEYS, st.floats(0, 3)), max_size=200))
@settings(max_examples=200, deadline=None)
def test_folding_keeps_every_first_line_and_counts_every_repeat(
    events: list[tuple[tuple[str, str, str], float]],
) -> None:
    folder = Folder(window=5.0)
    now = 0.0
    out: list[str] = []
    for n, (key, step) in enumerate(events):
        now += step
        out += folder.feed(key, f"line {n} {key}", now)
    out += folder.flush()
    firsts = [line for line in out if line.startswith("line ")]
    repeats = sum(int(line.split("(repeated ")[1].split()[0]) for line in out if "(repeated " in line)
    assert len(firsts) + repeats == len(events)
    # a message is written again (not only counted) once its window is over
    for key in {k for k, _ in events}:
        assert any(line.endswith(str(key)) for line in firsts)


def test_distinct_lines_are_never_folded() -> None:
    folder = Folder(window=5.0)
    out = [line for n in range(1000) for line in folder.feed(("ERROR", "x", f"m{n}"), f"m{n}", 0.0)]
    assert out == [f"m{n}" for n in range(1000)]


def test_a_repeated_error_is_one_line_and_a_count(tmp_path: Path) -> None:
    import io

    stream = io.StringIO()
    writer = logsink.LogWriter(tmp_path / "x.log", stream)
    for _ in range(5000):
        writer.write(("ERROR", "chrnode.rpc", "accept failed: EMFILE"), "accept failed: EMFILE", 1.0)
    writer.tick(7.0)
    writer.close()
    lines = (tmp_path / "x.log").read_text().splitlines()
    assert lines[0] == "accept failed: EMFILE"
    assert len(lines) == 2 and "(repeated 4999 more times in 6.0 s)" in lines[1], lines


def _chat(send_fd: int, prefix: str, count: int) -> None:
    import socket

    root = logging.getLogger()
    root.handlers = [SinkHandler(socket.socket(fileno=send_fd))]
    root.setLevel(logging.INFO)
    pad = "y" * 150
    for n in range(count):
        logging.getLogger("chrnode.test").info("%s %d %s", prefix, n, pad)
    os._exit(0)


def test_lines_from_many_processes_all_kept_across_rotation(tmp_path: Path) -> None:
    """Four processes write 4 x 8,000 distinct lines (about 7 MiB) through the socket pair into a
    file rotated at 2 MiB with 3 backups (8 MiB promised): every line is in the file or a backup."""
    import io

    sink = LogSink(tmp_path / "node.log", io.StringIO(), max_bytes=2 * 1024 * 1024).start()
    try:
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_chat, args=(sink.send.fileno(), f"p{i}", COUNT)) for i in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
    finally:
        sink.stop()
    files = [tmp_path / "node.log"] + [tmp_path / f"node.log.{n}" for n in (1, 2, 3)]
    assert all(f.exists() for f in files), "the flood rotated through every backup"
    assert not (tmp_path / "node.log.4").exists()
    text = "".join(f.read_text() for f in files)
    seen = {(w[4], w[5]) for w in (line.split() for line in text.splitlines()) if len(w) > 5}
    missing = [(f"p{i}", str(n)) for i in range(4) for n in range(COUNT) if (f"p{i}", str(n)) not in seen]
    assert not missing, f"{len(missing)} lines lost, e.g. {missing[:3]}"
    assert sum(f.stat().st_size for f in files) <= 4 * 2 * 1024 * 1024


def _level_child(write_fd: int) -> None:
    from actors.base import apply_log_level

    before_fork = logging.getLogger("chrnode.before_fork")  # a module-level logger of the parent
    logsink.route_child_logging()  # what every forked process does first (remembers the manager)
    # what Thespian's startChild does next: a fresh root and manager
    logging.root = logging.RootLogger(logging.WARNING)
    logging.Logger.root = logging.root
    logging.Logger.manager = logging.Manager(logging.root)
    after_fork = logging.getLogger("chrnode.after_fork")
    apply_log_level("debug")
    levels = [before_fork.level, after_fork.level, logging.root.level, before_fork.manager.root.level]
    os.write(write_fd, repr(levels).encode())
    os._exit(0)


def test_a_log_level_reaches_loggers_made_before_and_after_the_fork() -> None:
    read_fd, write_fd = os.pipe()
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_level_child, args=(write_fd,))
    child.start()
    child.join(30)
    os.close(write_fd)
    answer = os.read(read_fd, 200).decode()
    os.close(read_fd)
    assert answer == repr([logging.DEBUG] * 4), answer
