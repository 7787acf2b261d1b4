"""The base of every chr-node actor: its name, the registry, timers, stats and the thread bridge.

An actor is created by its supervisor and gets `Init` first; until then it only knows its class.
Peers are found by name in `self.registry`, which the root supervisor pushes on every change
(SPEC 9: never by a cached address). Actors that run an event loop in a thread (Tornado, asyncio)
hand outgoing messages to a `ThreadBridge` (actors/bridge.py); the actor's own thread sends them,
woken through a pipe that Thespian watches (`ThespianWatch`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
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
from actors.bridge import LoopAsks, LoopThread, ThreadBridge
from chrnode.forkhooks import set_title
from chrnode.logsink import logging_managers
from chrnode.stats import LocalStats

__all__ = ["ChrActor", "LoopAsks", "LoopThread", "ThreadBridge", "apply_log_level", "import_actor"]

STATS_FLUSH_SECONDS = 1.0


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
        self.crashed = False
        self.log = logging.getLogger(f"chrnode.actor.{self.name}")
        self._title = self.name  # Thespian named the process after the class already

    # -- Thespian entry point ---------------------------------------------------------------

    def receiveMessage(self, message: Any, sender: Any) -> Any:
        if self.crashed:
            if isinstance(message, ActorExitRequest):
                self._exit_after_crash(message, sender)
            return None  # a crashed actor handles nothing more: its replacement starts fresh
        try:
            if self.asks is None or not self.asks.resolve(message):
                super().receiveMessage(message, sender)
            if self.name != self._title:  # named by Init (or StartTree): show it in ps and top
                self._title = self.name
                set_title(self.name)
        except Exception:
            # OTP's "let it crash": an unexpected exception ends the actor, and its supervisor
            # starts a fresh one (it sent no Stopping, so the exit is abnormal). Thespian would
            # instead retry the message, then answer PoisonMessage and keep the broken actor.
            self.log.exception(
                "%s crashed handling %s; exiting so that its supervisor restarts it",
                self.name,
                type(message).__name__,
            )
            self.crashed = True
            self.send(self.myAddress, ActorExitRequest())
            return None
        if self.bridge is not None:
            return ThespianWatch([self.bridge.fileno])
        return None

    def _exit_after_crash(self, message: ActorExitRequest, sender: Any) -> None:
        try:
            self.receiveMsg_ActorExitRequest(message, sender)  # release sockets and threads
        except Exception:  # exiting anyway
            self.log.exception("%s: cleanup after its crash failed", self.name)

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
        self.send(sender, m.Started(self.name, os.getpid()))  # first: the next sibling waits for it
        self._subscribe_all()
        self.wakeupAfter(STATS_FLUSH_SECONDS, payload="__stats__")

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        try:
            self.on_stop()
        finally:
            if self.bridge is not None:
                self.bridge.close()
                self.bridge = None
        if self.parent_address is not None and not self.crashed:
            self.send(self.parent_address, m.Exiting(self.name))

    def receiveMsg_RegistryUpdate(self, msg: m.RegistryUpdate, sender: Any) -> None:
        pubsub_before = self.registry.get("PubSub")
        self.registry = dict(msg.entries)
        if self.asks is not None:
            self.asks.registry_changed(self.registry)
        if self.registry.get("PubSub") != pubsub_before and self.registry.get("PubSub") is not None:
            self._subscribe_all()
            self.on_pubsub_ready()

    def receiveMsg_Preload(self, msg: m.Preload, sender: Any) -> None:
        # Created ahead of its turn by its supervisor: work that needs no Init may be done now.
        if self.config is None:
            self.on_preload()

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
            if env.target == self.name:
                # A thread of this process reporting back (a pool's result): the same handlers as
                # a message from another actor, run here on the actor's own thread.
                ActorTypeDispatcher.receiveMessage(self, env.message, self.myAddress)
                continue
            address = self.registry.get(env.target)
            self.send_to(env.target, env.message)
            if self.asks is not None:
                self.asks.posted(env.target, env.message, address)

    def receiveMsg_Published(self, msg: m.Published, sender: Any) -> None:
        self.on_published(msg.topic, msg.key, msg.payload)

    def receiveMsg_PoisonMessage(self, msg: PoisonMessage, sender: Any) -> None:
        self.log.error("%s: a message it sent made its receiver fail twice: %r", self.name, msg.poisonMessage)

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: Any) -> None:
        """Leaf actors have no children; supervisors override this."""

    # -- for subclasses -----------------------------------------------------------------------

    def on_start(self, init: m.Init) -> None:
        """Set up; raise to refuse to start (the supervisor sees InitFailed)."""

    def on_preload(self) -> None:
        """Before Init, in a process created ahead of its turn: e.g. import heavy modules, so that
        `on_start` (which runs in order, one actor at a time) is short."""

    def on_stop(self) -> None:
        """Release what the actor holds (sockets, threads, files)."""

    def on_timer(self, payload: Any) -> None:
        """A `wakeupAfter(seconds, payload)` came due."""

    def on_published(self, topic: str, key: str, payload: Any) -> None:
        """A message on a subscribed PubSub topic."""

    def on_pubsub_ready(self) -> None:
        """PubSub (re)appeared: publish any state others should see (it retains the last one)."""

    # -- helpers ------------------------------------------------------------------------------

    def lookup(self, name: str) -> Any:
        return self.registry.get(name)

    told_globals: Any = None  # the Globals process last told this actor's state (`globals_is_new`)

    def globals_is_new(self) -> bool:
        """Globals is registered at an address this actor has not told yet: True once per Globals
        process, so a listener tells its ports to a restarted Globals, not on every registry push."""
        address = self.registry.get("Globals")
        if address is None or address == self.told_globals:
            return False
        self.told_globals = address
        return True

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
        if manager.root.level != numeric:
            manager.root.setLevel(numeric)
        for logger in list(manager.loggerDict.values()):
            # setLevel clears every logger's cache: only where the level changes (an actor
            # inherits its parent's levels, which are almost always the ones it is given)
            if (
                isinstance(logger, logging.Logger)
                and logger.level != numeric
                and not logger.name.lower().startswith("thespian")
            ):
                logger.setLevel(numeric)


def import_actor(path: str) -> Callable[..., Any]:
    """`module:Class` -> the class (ChildSpec carries paths so it stays picklable)."""
    import importlib

    module, _, cls = path.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]
