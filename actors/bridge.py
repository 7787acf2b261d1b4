"""How threads inside an actor's process talk to the actor system (SPEC 9).

Thespian's `send` is not thread-safe, so a thread (an asyncio or Tornado loop serving sockets, a
worker pool) hands messages to the actor's own thread: `ThreadBridge` is a queue plus a wake-up
pipe that the actor watches (`ThespianWatch`): `post(name, message)` is the one way a thread
reaches an actor, its own included (a worker pool reporting a result); `LoopAsks` lets coroutines
ask an actor by name and await the answer, failing at once when that actor is gone or
restarting; `LoopThread` runs an asyncio loop in a thread of the actor's process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from actors import messages as m
from chrnode.errors import ActorError, ActorRestarting


class ThreadBridge:
    """Lets a thread ask the actor's thread to send a message (Thespian's send is not thread-safe)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[m.Envelope] = queue.SimpleQueue()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    @property
    def fileno(self) -> int:
        return self._read_fd

    def post(self, target: str, message: Any) -> None:
        """From any thread: have `message` sent to the actor named `target`. A thread reporting
        back to the actor of its own process posts to that actor's name: the message is handled
        by its `receiveMsg_*` on the actor's thread, without a trip through Thespian."""
        self._queue.put(m.Envelope(target, message))
        try:
            os.write(self._write_fd, b"\0")
        except BlockingIOError:  # the pipe is full: the actor is already due to wake up
            pass

    def drain(self) -> list[m.Envelope]:
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        out: list[m.Envelope] = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


class LoopAsks:
    """Lets coroutines on a thread's event loop ask actors and await their answers.

    `await asks.ask("Model.Sql.Cache", SqlRead(...))` posts the message (its `tag` replaced by a
    fresh one) through the bridge; the actor's thread sends it, and when an answer with that tag
    comes back, `ChrActor.receiveMessage` resolves the future on the loop.
    """

    def __init__(self, bridge: ThreadBridge) -> None:
        self.bridge = bridge
        self._ids = itertools.count(1)
        self.pending: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        # tag -> (target name, the address it was sent to): written by the actor's thread only
        self.sent: dict[str, tuple[str, Any]] = {}

    async def ask(self, target: str, message: Any, timeout: float = 10.0) -> Any:
        """Ask `target`; ActorRestarting at once if it is gone or goes before it answers."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        tag = f"ask-{next(self._ids)}"
        self.pending[tag] = (loop, future)
        self.bridge.post(target, dataclasses.replace(message, tag=tag))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise ActorError(
                f"{target} did not answer {type(message).__name__} within {timeout:g} s"
            ) from exc
        finally:
            self.pending.pop(tag, None)

    def posted(self, target: str, message: Any, address: Any) -> None:
        """From the actor's thread: `message` went to `target` at `address` (None: not registered,
        so it was not sent). An ask to a name that is not there fails at once."""
        tag = getattr(message, "tag", None)
        if not isinstance(tag, str) or tag not in self.pending:
            return
        if address is None:
            self._fail(tag, ActorRestarting(target, type(message).__name__))
        else:
            self.sent[tag] = (target, address)

    def registry_changed(self, registry: dict[str, Any]) -> None:
        """From the actor's thread: asks sent to an address the registry no longer holds will never
        be answered (that process is gone): fail them now (OTP fails a call when its callee dies)."""
        for tag, (target, address) in list(self.sent.items()):
            if tag not in self.pending:
                del self.sent[tag]
            elif registry.get(target) != address:
                del self.sent[tag]
                self._fail(tag, ActorRestarting(target, "the request"))

    def _fail(self, tag: str, error: Exception) -> None:
        waiting = self.pending.get(tag)
        if waiting is not None:
            loop, future = waiting
            loop.call_soon_threadsafe(_set_exception, future, error)

    def resolve(self, message: Any) -> bool:
        """From the actor's thread: hand an answer to its waiter; False if nobody waits for it."""
        tag = getattr(message, "tag", None)
        if not isinstance(tag, str):
            return False
        waiting = self.pending.get(tag)
        if waiting is None:
            return False
        self.sent.pop(tag, None)
        loop, future = waiting
        loop.call_soon_threadsafe(_set_result, future, message)
        return True


class LoopThread:
    """An asyncio loop in a thread of the actor's process, for actors that serve sockets.

    `start(setup)` runs the coroutine `setup()` on the new loop and returns its result, or raises
    its exception in the actor's thread (so a port in use fails the actor's start, with reason);
    after it the loop runs until `stop()`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def start(self, setup: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
        ready = threading.Event()
        outcome: dict[str, Any] = {}

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            try:
                outcome["value"] = loop.run_until_complete(setup())
            except Exception as exc:  # handed to start(), which raises it in the actor's thread
                outcome["error"] = exc
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self.thread = threading.Thread(target=run, name=self.name, daemon=True)
        self.thread.start()
        if not ready.wait(timeout):
            raise ActorError(f"{self.name} did not start within {timeout:g} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def stop(
        self, cleanup: Callable[[], Coroutine[Any, Any, Any]] | None = None, timeout: float = 5.0
    ) -> None:
        loop = self.loop
        if loop is None or not loop.is_running():
            return
        if cleanup is not None:
            try:
                asyncio.run_coroutine_threadsafe(cleanup(), loop).result(timeout)
            except Exception as exc:  # stopping anyway: the process ends right after
                logging.getLogger("chrnode.actor").warning("%s did not stop cleanly: %s", self.name, exc)
        loop.call_soon_threadsafe(loop.stop)
        if self.thread is not None:
            self.thread.join(timeout)


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
