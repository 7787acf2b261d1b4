"""One writer for the node's log file, fed by every process of the node (SPEC 8, logs).

Twenty-odd processes that each open and rotate `chr-node.log` race at every rollover and lose
what they promised to keep. Here only the daemon writes the file: before the actor system
exists it opens a Unix datagram socket pair; every process it forks inherits the sending end
and logs through `SinkHandler` (one datagram per record), and a thread of the daemon receives,
folds repeats and writes. A full receive queue blocks the sender for a moment instead of dropping
the record, so a flood slows its sources rather than erasing the evidence.

Retention is what the rotation says: the file plus `LOG_BACKUPS` backups of `LOG_MAX_BYTES`
each (40 MiB in all). `Folder` (pure) folds a message repeated within `FOLD_SECONDS` into its
first line and one `repeated N times` line, so a flood of one error cannot push everything else
out of the files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 3  # the file and three backups: 40 MiB
FOLD_SECONDS = 5.0
MAX_DATAGRAM = 60_000  # a record longer than this is cut (a datagram must fit the socket buffer)
_BUFFER = 4 * 1024 * 1024

Key = tuple[str, str, str]  # level name, logger name, message


@dataclass
class _Seen:
    since: float
    repeats: int = 0


@dataclass
class Folder:
    """Repeated messages folded: the first is written, the next ones within `window` are counted
    and reported in one line when the window ends (or at `flush`). Pure: no clock, no I/O."""

    window: float = FOLD_SECONDS
    max_keys: int = 10_000
    seen: dict[Key, _Seen] = field(default_factory=dict)

    def feed(self, key: Key, line: str, now: float) -> list[str]:
        out = self.expire(now)
        entry = self.seen.get(key)
        if entry is not None:
            entry.repeats += 1
            return out
        if len(self.seen) >= self.max_keys:  # under a flood of distinct lines, stop remembering
            out += self.flush()
        self.seen[key] = _Seen(now)
        out.append(line)
        return out

    def expire(self, now: float) -> list[str]:
        """Summary lines of the windows that ended by `now` (entries are kept in the order they
        began, so only the oldest need looking at)."""
        out = []
        while self.seen:
            key, entry = next(iter(self.seen.items()))
            if now - entry.since < self.window:
                break
            del self.seen[key]
            if entry.repeats:
                out.append(_summary(key, entry.repeats, now - entry.since))
        return out

    def flush(self) -> list[str]:
        out = [_summary(key, e.repeats, 0.0) for key, e in self.seen.items() if e.repeats]
        self.seen.clear()
        return out


def _summary(key: Key, repeats: int, seconds: float) -> str:
    level, name, message = key
    stamp = logging.Formatter().formatTime(logging.makeLogRecord({}))
    within = f" in {seconds:.1f} s" if seconds else ""
    return f"{stamp} {level:<7} {name}: (repeated {repeats} more times{within}) {message[:500]}"


def _encode(record: logging.LogRecord, formatter: logging.Formatter) -> bytes:
    line = formatter.format(record)
    data = json.dumps([record.levelname, record.name, record.getMessage(), line]).encode()
    if len(data) > MAX_DATAGRAM:
        cut = line[: MAX_DATAGRAM // 2] + " [cut]"
        data = json.dumps([record.levelname, record.name, record.getMessage()[:1000], cut]).encode()
    return data


class LogWriter:
    """The one writer: the rotating file (if any) and stderr, behind one lock."""

    def __init__(
        self,
        path: Path | None,
        stream: TextIO | None = None,
        max_bytes: int = LOG_MAX_BYTES,
        backups: int = LOG_BACKUPS,
    ) -> None:
        self.lock = threading.Lock()
        self.folder = Folder()
        self.stream = stream if stream is not None else sys.stderr
        self.file: logging.handlers.RotatingFileHandler | None = None
        if path is not None:
            self.file = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
            self.file.setFormatter(logging.Formatter("%(message)s"))

    def write(self, key: Key, line: str, now: float) -> None:
        with self.lock:
            self._emit(self.folder.feed(key, line, now))

    def tick(self, now: float) -> None:
        with self.lock:
            self._emit(self.folder.expire(now))

    def close(self) -> None:
        with self.lock:
            self._emit(self.folder.flush())
            if self.file is not None:
                self.file.close()

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            if self.file is not None:
                self.file.handle(logging.makeLogRecord({"msg": line}))
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed: the file still has it
                pass


class LocalHandler(logging.Handler):
    """In the daemon: records go straight to the writer."""

    def __init__(self, writer: LogWriter) -> None:
        super().__init__()
        self.writer = writer
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self.writer.write((record.levelname, record.name, record.getMessage()), line, time.monotonic())
        except Exception:
            self.handleError(record)


class SinkHandler(logging.Handler):
    """In every other process of the node: one datagram per record to the daemon's writer."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = _encode(record, self.formatter or logging.Formatter(LOG_FORMAT))
            self.sock.send(data)
        except OSError:  # the daemon is gone (the process is about to be killed too)
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


class LogSink:
    """The daemon's end: the socket pair, the writer and its receiving thread."""

    def __init__(
        self, path: Path | None, stream: TextIO | None = None, max_bytes: int = LOG_MAX_BYTES
    ) -> None:
        self.writer = LogWriter(path, stream, max_bytes)
        self.recv, self.send = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in (self.recv, self.send):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
        self.recv.settimeout(0.5)
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="chr-node-log-writer", daemon=True)

    def start(self) -> LogSink:
        global _active
        _active = self
        self.thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                data = self.recv.recv(MAX_DATAGRAM + 1024)
            except TimeoutError:
                self.writer.tick(time.monotonic())
                if self._stopping.is_set():
                    return
                continue
            except OSError:
                return
            self._take(data)

    def _take(self, data: bytes) -> None:
        try:
            level, name, message, line = json.loads(data)
        except (ValueError, TypeError):
            level, name, message, line = "ERROR", "chrnode.logsink", "unreadable record", repr(data[:200])
        self.writer.write((str(level), str(name), str(message)), str(line), time.monotonic())

    def stop(self) -> None:
        """Write what is still queued, then close the file (the daemon's last step)."""
        global _active
        self._stopping.set()
        self.thread.join(5)
        self.recv.setblocking(False)
        try:
            while True:
                self._take(self.recv.recv(MAX_DATAGRAM + 1024))
        except OSError:
            pass
        self.writer.close()
        self.recv.close()
        self.send.close()
        _active = None


_active: LogSink | None = None


def active() -> LogSink | None:
    return _active


_managers: list[logging.Manager] = []


def logging_managers() -> list[logging.Manager]:
    """Every logging manager this process has had: the current one and those inherited from
    before Thespian replaced it (their loggers are still in use by module-level code)."""
    current = logging.Logger.manager
    return [*(m for m in _managers if m is not current), current]


def route_child_logging() -> None:
    """Right after a fork: remember the inherited logging manager; with a sink, log only through
    it, and drop the daemon's receiving end (see forkhooks: a process holds only what it owns)."""
    if all(m is not logging.Logger.manager for m in _managers):
        _managers.append(logging.Logger.manager)
    sink = _active
    if sink is None:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(devnull, sink.recv.fileno())
    finally:
        os.close(devnull)
    logging.getLogger().handlers = [_child_handler_for(sink)]


_child_handler: SinkHandler | None = None


def _child_handler_for(sink: LogSink) -> SinkHandler:
    """The handler a child logs through into ``sink``: the one the daemon prepared, or a new one
    (made the same way) when it has none for this sink."""
    global _child_handler
    if _child_handler is None or _child_handler.sock is not sink.send:
        handler = SinkHandler(sink.send)
        handler.addFilter(NotThespianFilter())
        _child_handler = handler
    return _child_handler


def prepare_child_handler() -> None:
    """In the daemon, before the first fork: the handler every child logs through, made (and its
    formatting run once) here, so each child shares it instead of building its own (0.3 MiB of
    private memory in each process)."""
    global _child_handler
    sink = _active
    if sink is None:
        _child_handler = None
        return
    handler = _child_handler_for(sink)
    _encode(
        logging.makeLogRecord({"name": "chrnode", "msg": "warm"}), handler.formatter or logging.Formatter()
    )


class NotThespianFilter(logging.Filter):
    """Thespian logs its own chatter at INFO; keep operators' logs about the node."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("thespian")


def sink_handler() -> logging.Handler:
    """logging.config factory for Thespian's logger process (it gets little: see actorsys)."""
    sink = _active
    if sink is None:
        return logging.StreamHandler(sys.stderr)
    return SinkHandler(sink.send)


def thespian_root(*args: object, **kwargs: object) -> logging.Logger:
    """Stands in for Thespian's `ThespianLogForwarder` while a sink is active: the process keeps
    its root logger (which sends to the sink) instead of forwarding to Thespian's logger, so the
    loggers made before the fork and after it end at the same, single handler."""
    if _active is None:
        from thespian.system.logdirector import ThespianLogForwarder

        return ThespianLogForwarder(*args, **kwargs)  # type: ignore[no-any-return]
    return logging.getLogger()
