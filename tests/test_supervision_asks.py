"""Asks to an actor that is gone or restarting fail at once (LoopAsks, actors/base.py).

The actor's thread is played by a real thread that drains the real ThreadBridge, as
`ChrActor.receiveMsg_WatchMessage` does; the asking side is a real asyncio loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from actors import messages as m
from actors.base import LoopAsks, ThreadBridge
from chrnode.errors import ActorError, ActorRestarting


def actor_thread(asks: LoopAsks, then: Callable[[m.Envelope], None]) -> threading.Thread:
    def run() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            envelopes = asks.bridge.drain()
            if envelopes:
                then(envelopes[0])
                return
            time.sleep(0.001)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def ask(then: Callable[[LoopAsks, m.Envelope], None], timeout: float = 5.0) -> tuple[Any, float]:
    bridge = ThreadBridge()
    asks = LoopAsks(bridge)

    async def main() -> tuple[Any, float]:
        thread = actor_thread(asks, lambda env: then(asks, env))
        started = time.monotonic()
        try:
            result: Any = await asks.ask("RemoteChain.Cache", m.SqlRead("q"), timeout)
        except ActorError as exc:
            result = exc
        thread.join()
        return result, time.monotonic() - started

    try:
        return asyncio.run(main())
    finally:
        bridge.close()


def test_an_ask_to_a_name_that_is_not_registered_fails_at_once() -> None:
    result, took = ask(lambda asks, env: asks.posted(env.target, env.message, None))
    assert isinstance(result, ActorRestarting) and result.name == "RemoteChain.Cache"
    assert "RemoteChain.Cache is restarting" in str(result) and "SqlRead" in str(result)
    assert took < 1.0


@pytest.mark.parametrize("new_address", [None, "address-2"])
def test_an_ask_whose_actor_leaves_the_registry_fails_at_once(new_address: str | None) -> None:
    def then(asks: LoopAsks, env: m.Envelope) -> None:
        asks.posted(env.target, env.message, "address-1")
        registry = {"Other": "x"} if new_address is None else {env.target: new_address}
        asks.registry_changed(registry)

    result, took = ask(then)
    assert isinstance(result, ActorRestarting) and took < 1.0


def test_an_ask_is_answered_when_the_registry_keeps_its_address() -> None:
    def then(asks: LoopAsks, env: m.Envelope) -> None:
        asks.posted(env.target, env.message, "address-1")
        asks.registry_changed({env.target: "address-1", "Stats": "s"})
        assert asks.resolve(m.SqlReadReply(env.message.tag, True, 42))

    result, _ = ask(then)
    assert isinstance(result, m.SqlReadReply) and result.result == 42


def test_an_unanswered_ask_still_times_out() -> None:
    result, took = ask(lambda asks, env: asks.posted(env.target, env.message, "address-1"), timeout=0.2)
    assert isinstance(result, ActorError) and not isinstance(result, ActorRestarting)
    assert "did not answer SqlRead within 0.2 s" in str(result) and took < 2.0
