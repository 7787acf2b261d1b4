"""The base of every chr-node actor: its name, the registry, timers, stats and the thread bridge.

An actor is created by its supervisor and gets `Init` first; until then it only knows its class.
Peers are found by name in `self.registry`, which the root supervisor pushes on every change
(SPEC 9: never by a cached address). Actors that run an event loop in a thread (Tornado, asyncio)
hand outgoing messages to a `ThreadBridge`; the actor's own thread sends them, woken through a
pipe that Thespian watches (`ThespianWatch`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from thespian.actors import (
    ActorExitRequest,
    ActorTypeDispatcher,
    ChildActorExited,
    PoisonMessage,
    ThespianWatch,
    WakeupMessage,
    WatchMessage,
)

from actors import messages as m
from chrnode.errors import ActorError
from chrnode.forkhooks import set_title
from chrnode.logsink import logging_managers
from chrnode.stats import LocalStats

STATS_FLUSH_SECONDS = 1.0


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

    def post(self, target: str, message: Any, **extra: Any) -> None:
        """From any thread: have `message` sent to the actor named `target`."""
        self._queue.put(m.Envelope(target, message, extra))
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

    async def ask(self, target: str, message: Any, timeout: float = 10.0) -> Any:
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

    def resolve(self, message: Any) -> bool:
        """From the actor's thread: hand an answer to its waiter; False if nobody waits for it."""
        tag = getattr(message, "tag", None)
        if not isinstance(tag, str):
            return False
        waiting = self.pending.get(tag)
        if waiting is None:
            return False
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


class ChrActor(ActorTypeDispatcher):  # type: ignore[misc]
    """Base class: subclasses override `on_start`, `on_stop`, `on_timer`, `on_published`."""

    SUBSCRIBE: tuple[str, ...] = ()  # PubSub topics to follow, re-subscribed when PubSub restarts

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = self.__class__.__name__
        self.config: Any = None
        self.registry: dict[str, Any] = {}
        self.parent_name = ""
        self.parent_address: Any = None
        self.started_at = time.time()
        self.stats = LocalStats("unnamed")
        self.bridge: ThreadBridge | None = None
        self.asks: LoopAsks | None = None
        self.log = logging.getLogger(f"chrnode.actor.{self.name}")
        self._title = self.name  # Thespian named the process after the class already

    # -- Thespian entry point ---------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: Any) -> Any:
        if self.asks is None or not self.asks.resolve(message):
            super().receiveMessage(message, sender)
        if self.name != self._title:  # named by Init (or StartTree): show it in ps and top
            self._title = self.name
            set_title(self.name)
        if self.bridge is not None:
            return ThespianWatch([self.bridge.fileno])
        return None

    def receiveUnrecognizedMessage(self, message: Any, sender: Any) -> None:
        self.log.warning("%s: ignoring unexpected message %r", self.name, type(message).__name__)

    # -- lifecycle ----------------------------------------------------------------------------

    def receiveMsg_Init(self, msg: m.Init, sender: Any) -> None:
        self.name = msg.name
        self.config = msg.config
        self.registry = dict(msg.registry)
        self.parent_name = msg.parent
        self.parent_address = sender
        self.log = logging.getLogger(f"chrnode.actor.{self.name}")
        self.stats = LocalStats(self.name)
        apply_log_level(getattr(msg.config, "log_level", "info"))
        try:
            self.on_start(msg)
        except Exception as exc:  # a failed start is reported, then the supervisor decides
            self.log.exception("%s failed to start", self.name)
            self.send(sender, m.InitFailed(self.name, f"{type(exc).__name__}: {exc}"))
            return
        self._subscribe_all()
        self.send(sender, m.Started(self.name, os.getpid()))
        self.wakeupAfter(STATS_FLUSH_SECONDS, payload="__stats__")

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        try:
            self.on_stop()
        finally:
            if self.bridge is not None:
                self.bridge.close()
                self.bridge = None

    def receiveMsg_RegistryUpdate(self, msg: m.RegistryUpdate, sender: Any) -> None:
        pubsub_before = self.registry.get("PubSub")
        self.registry = dict(msg.entries)
        if self.registry.get("PubSub") != pubsub_before and self.registry.get("PubSub") is not None:
            self._subscribe_all()
            self.on_pubsub_ready()

    def receiveMsg_Ping(self, msg: m.Ping, sender: Any) -> None:
        self.send(sender, m.Pong(self.name, os.getpid(), self.started_at))

    def receiveMsg_SetLogLevel(self, msg: m.SetLogLevel, sender: Any) -> None:
        apply_log_level(msg.level)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        if msg.payload == "__stats__":
            self._flush_stats()
            self.wakeupAfter(STATS_FLUSH_SECONDS, payload="__stats__")
        else:
            self.on_timer(msg.payload)

    def receiveMsg_WatchMessage(self, msg: WatchMessage, sender: Any) -> None:
        if self.bridge is None:
            return
        for env in self.bridge.drain():
            if env.target == "__self__":
                self.on_bridge(env.message, env.extra)
            else:
                self.send_to(env.target, env.message)

    def receiveMsg_Published(self, msg: m.Published, sender: Any) -> None:
        self.on_published(msg.topic, msg.key, msg.payload)

    def receiveMsg_PoisonMessage(self, msg: PoisonMessage, sender: Any) -> None:
        self.log.error("%s: a message it sent made its receiver fail twice: %r", self.name, msg.poisonMessage)

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        """Leaf actors have no children; supervisors override this."""

    # -- for subclasses -----------------------------------------------------------------------

    def on_start(self, init: m.Init) -> None:
        """Set up; raise to refuse to start (the supervisor sees InitFailed)."""

    def on_stop(self) -> None:
        """Release what the actor holds (sockets, threads, files)."""

    def on_timer(self, payload: Any) -> None:
        """A `wakeupAfter(seconds, payload)` came due."""

    def on_published(self, topic: str, key: str, payload: Any) -> None:
        """A message on a subscribed PubSub topic."""

    def on_pubsub_ready(self) -> None:
        """PubSub (re)appeared: publish any state others should see (it retains the last one)."""

    def on_bridge(self, message: Any, extra: dict[str, Any]) -> None:
        """A message a thread posted to `__self__` through the bridge."""

    # -- helpers ------------------------------------------------------------------------------

    def lookup(self, name: str) -> Any:
        return self.registry.get(name)

    def send_to(self, name: str, message: Any) -> bool:
        address = self.registry.get(name)
        if address is None:
            self.log.debug(
                "%s: no actor named %s right now; dropped %s", self.name, name, type(message).__name__
            )
            return False
        self.send(address, message)
        return True

    def publish(self, topic: str, key: str, payload: Any) -> None:
        self.send_to("PubSub", m.Publish(topic, key, payload))

    def exit_normally(self) -> None:
        """Exit on purpose: a transient actor that does this is not restarted (SPEC 9)."""
        if self.parent_address is not None:
            self.send(self.parent_address, m.Stopping(self.name))
        self.send(self.myAddress, ActorExitRequest())

    def start_bridge(self) -> ThreadBridge:
        self.bridge = ThreadBridge()
        self.asks = LoopAsks(self.bridge)
        return self.bridge

    def _subscribe_all(self) -> None:
        for topic in self.SUBSCRIBE:
            self.send_to("PubSub", m.Subscribe(topic, self.name))

    def _flush_stats(self) -> None:
        if self.name == "Stats":
            return
        batch = self.stats.drain()
        if not batch.is_empty():
            self.send_to("Stats", m.StatsReport(self.name, batch))


def apply_log_level(level: str) -> None:
    """Set `level` on every logger of this process.

    Thespian gives each actor process a fresh logging manager, but loggers created before the
    fork still belong to the inherited one (chrnode.logsink keeps both), so setting the root's
    level alone would miss them: set it on each logger of each manager. Only the loggers are
    touched: walking every module's globals, as this once did, wrote to the reference count of
    every inherited object and so copied about 10 MiB of the parent's pages into each process.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        return
    for manager in logging_managers():
        manager.root.setLevel(numeric)
        for logger in list(manager.loggerDict.values()):
            if isinstance(logger, logging.Logger) and not logger.name.lower().startswith("thespian"):
                logger.setLevel(numeric)


def import_actor(path: str) -> Callable[..., Any]:
    """`module:Class` -> the class (ChildSpec carries paths so it stays picklable)."""
    import importlib

    module, _, cls = path.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]
