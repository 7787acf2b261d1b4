"""Channels (SPEC 4 flag ``s``) on a real node with real device clients over TLS on loopback:
one consent, several readers, leaving, the target closing, bad joins, and a slow reader."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chrnode.crypto import to_hex_address
from chrnode.device.client import DeviceClient, Port, PortOffer
from chrnode.edge import codes
from chrnode.errors import ChrError, RequestRefused
from chrnode.testing.edge import EdgeNode, async_test, start_node, wait_for


async def _publisher(node: EdgeNode, name: int | str) -> tuple[DeviceClient, list[PortOffer]]:
    """A target that shares ``name`` as a channel and records every portopen it is asked."""
    target = await node.device()
    offers: list[PortOffer] = []

    async def accept(offer: PortOffer) -> bool:
        offers.append(offer)
        return True

    target.on_portopen = accept
    target.shared_ports.add(name)
    return target, offers


async def _read_all(port: Port, size: int) -> bytes:
    digest, received = hashlib.sha256(), 0
    while received < size:
        chunk = await port.read()
        if not chunk:
            raise AssertionError(f"port {port.ref} ended after {received} of {size} bytes")
        digest.update(chunk)
        received += len(chunk)
    return digest.digest()


@async_test(timeout=120)
async def test_three_subscribers_get_the_targets_bytes_intact_and_the_target_consents_once(
    tmp_path: Path,
) -> None:
    node = await start_node(tmp_path)
    try:
        target, offers = await _publisher(node, "feed")
        owner, second, third = [await node.device() for _ in range(3)]
        a = await owner.open_port(target.address, "feed", "rws")
        channel = await target.accept()
        b = await second.open_port(target.address, "feed", "rs")
        c = await third.open_port(target.address, "feed", "rs")
        assert len({a.ref, b.ref, c.ref}) == 3  # each subscriber its own ref
        assert offers == [PortOffer(a.ref, owner.address, "feed", "rws")]  # asked once, for the owner
        assert channel.ref == a.ref
        data = os.urandom(6 << 20)
        writer = asyncio.ensure_future(channel.write(data))
        digests = await asyncio.gather(*(_read_all(p, len(data)) for p in (a, b, c)))
        await writer
        assert digests == [hashlib.sha256(data).digest()] * 3
        # Only the owner writes; the target reads exactly what the owner sent.
        await a.write(b"from the owner")
        assert await channel.read() == b"from the owner"
        with pytest.raises(ChrError):
            await b.write(b"a reader may not write")  # refused by the client itself ('rs')
        status = node.server.channels.status()
        assert status == {**node.server.snapshot()["channels"], "list": status["list"]}
        assert status["channels"] == 1 and status["members"] == 3
        assert status["bytes_delivered"] == 3 * len(data)
        (listed,) = status["list"]
        assert listed["target"] == to_hex_address(target.address) and listed["port"] == "feed"
        assert [m["owner"] for m in listed["members"]] == [True, False, False]
        assert node.server.snapshot()["ports_open"] == 4  # the target's port and three members'
        await asyncio.gather(owner.close(), second.close(), third.close(), target.close())
    finally:
        await node.stop()


@async_test(timeout=120)
async def test_a_subscriber_leaving_does_not_disturb_the_others_and_the_last_closes_the_target(
    tmp_path: Path,
) -> None:
    node = await start_node(tmp_path)
    try:
        target, _offers = await _publisher(node, 7)
        owner, stays, leaves = [await node.device() for _ in range(3)]
        a = await owner.open_port(target.address, 7, "rs")
        channel = await target.accept()
        b = await stays.open_port(target.address, 7, "rs")
        c = await leaves.open_port(target.address, 7, "rs")
        await channel.write(b"one")
        assert [await p.read() for p in (a, b, c)] == [b"one"] * 3
        await c.close()
        await leaves.close()  # and its device goes away entirely
        data = os.urandom(2 << 20)
        await channel.write(data)
        digests = await asyncio.gather(_read_all(a, len(data)), _read_all(b, len(data)))
        assert digests == [hashlib.sha256(data).digest()] * 2
        await a.close()  # the owner leaves: the channel goes on for the other reader
        await channel.write(b"still here")
        assert await b.read() == b"still here"
        assert not channel.at_eof
        await b.close()  # the last member: the target's port closes
        assert await channel.read() == b""
        await wait_for(lambda: node.server.snapshot()["ports_open"] == 0, what="all ports closed")
        assert node.server.snapshot()["channels"]["channels"] == 0
        # A new opener starts a new channel, and the target is asked again.
        again = await owner.open_port(target.address, 7, "rs")
        assert (await target.accept()).ref == again.ref
        await asyncio.gather(owner.close(), stays.close(), target.close())
    finally:
        await node.stop()


@async_test(timeout=60)
async def test_the_target_closing_or_leaving_ends_every_subscriber(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        target, _offers = await _publisher(node, "news")
        readers = [await node.device() for _ in range(3)]
        ports = [await readers[0].open_port(target.address, "news", "rs")]
        channel = await target.accept()
        ports += [await r.open_port(target.address, "news", "rs") for r in readers[1:]]
        await channel.write(b"bye")
        await channel.close()
        for port in ports:
            assert await port.read() == b"bye"
            assert await port.read() == b""
        await wait_for(lambda: node.server.snapshot()["ports_open"] == 0, what="ports closed")
        # The target's device leaving has the same effect.
        ports = [await readers[0].open_port(target.address, "news", "rs")]
        await target.accept()
        ports += [await r.open_port(target.address, "news", "rs") for r in readers[1:]]
        await target.close()
        for port in ports:
            assert await port.read() == b""
        for reader in readers:
            assert await reader.ping() > 0  # the subscribers' sessions are intact
        await asyncio.gather(*(r.close() for r in readers))
    finally:
        await node.stop()


@async_test(timeout=60)
async def test_conflicting_flags_and_too_many_subscribers_get_clear_codes(tmp_path: Path) -> None:
    node = await start_node(tmp_path, channel_max_members=3)
    try:
        target, offers = await _publisher(node, 1)
        devices = [await node.device() for _ in range(5)]
        await devices[0].open_port(target.address, 1, "rws")
        await target.accept()
        with pytest.raises(RequestRefused) as refused:
            await devices[1].open_port(target.address, 1, "rws")  # only the owner writes
        assert refused.value.code == codes.FORBIDDEN and "'rs'" in str(refused.value)
        writer = await devices[1].open_port(target.address, 1, "ws")  # not a channel open: asked
        assert (await target.accept()).ref == writer.ref and len(offers) == 2
        await writer.close()
        await devices[1].open_port(target.address, 1, "rs")
        await devices[2].open_port(target.address, 1, "rs")
        with pytest.raises(RequestRefused) as refused:
            await devices[3].open_port(target.address, 1, "rs")
        assert refused.value.code == codes.BUSY and "3 members" in str(refused.value)
        assert len(offers) == 2
        # A port opened without "s" to the same target and port is an ordinary one: asked again.
        plain = await devices[4].open_port(target.address, 1, "rw")
        assert (await target.accept()).ref == plain.ref and len(offers) == 3
        await asyncio.gather(*(d.close() for d in devices), target.close())
    finally:
        await node.stop()


@async_test(timeout=60)
async def test_a_target_that_does_not_share_keeps_asking_each_opener(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        target, offers = await _publisher(node, "other")  # shares "other", not "feed"
        first, second = await node.device(), await node.device()
        a = await first.open_port(target.address, "feed", "rs")
        b = await second.open_port(target.address, "feed", "rs")
        assert [o.device for o in offers] == [first.address, second.address]
        remote_a, remote_b = await target.accept(), await target.accept()
        await remote_a.write(b"a")
        await remote_b.write(b"b")
        assert (await a.read(), await b.read()) == (b"a", b"b")
        assert node.server.snapshot()["channels"]["channels"] == 0
        await asyncio.gather(first.close(), second.close(), target.close())
    finally:
        await node.stop()


@async_test(timeout=120)
async def test_a_slow_reader_is_closed_too_slow_and_the_others_keep_full_speed(tmp_path: Path) -> None:
    node = await start_node(tmp_path, channel_max_lag=1 << 20, channel_slow_timeout=30.0)
    try:
        target, _offers = await _publisher(node, "stream")
        fast1, fast2, slow = [await node.device() for _ in range(3)]
        a = await fast1.open_port(target.address, "stream", "rs")
        channel = await target.accept()
        b = await fast2.open_port(target.address, "stream", "rs")
        s = await slow.open_port(target.address, "stream", "rs")  # never read
        slow_session = node.server.devices[slow.address]
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                conn = slow_session.conn
                if conn is not None:
                    peak = max(peak, conn.get_write_buffer_size())
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        data = os.urandom(1 << 20) * 48
        writer = asyncio.ensure_future(channel.write(data))
        digests = await asyncio.gather(_read_all(a, len(data)), _read_all(b, len(data)))
        await writer
        watcher.cancel()
        assert digests == [hashlib.sha256(data).digest()] * 2  # the others got everything
        await wait_for(lambda: node.server.snapshot()["channels"]["slow_closed"] == 1, what="too_slow")
        # The slow reader's port ended; what it had received before stays readable, then EOF, and
        # the notify that says why arrives behind the data it did not read.
        received = 0
        while chunk := await s.read():
            received += len(chunk)
        assert received < len(data)
        await wait_for(
            lambda: any(n.code == codes.TOO_SLOW for n in slow.notifications), what="too_slow notify"
        )
        # Memory for it on the node stayed bounded: its connection's buffer plus the lag allowed.
        assert 512 * 1024 <= peak < (1 << 20) + 2 * 1024 * 1024, peak  # it did fall behind
        status = node.server.snapshot()["channels"]
        assert status["slow_closed"] == 1 and status["members"] == 2
        assert await slow.ping() > 0  # its session is intact: only its channel port was closed
        await asyncio.gather(fast1.close(), fast2.close(), slow.close(), target.close())
    finally:
        await node.stop()


@async_test(timeout=60)
async def test_a_reader_that_stays_behind_for_the_slow_timeout_is_closed_even_under_the_lag(
    tmp_path: Path,
) -> None:
    node = await start_node(tmp_path, channel_max_lag=16 << 20, channel_slow_timeout=0.5)
    try:
        target, _offers = await _publisher(node, "s")
        fast, slow = await node.device(), await node.device()
        a = await fast.open_port(target.address, "s", "rs")
        channel = await target.accept()
        s = await slow.open_port(target.address, "s", "rs")  # never read
        data = os.urandom(12 << 20)  # past what the slow client and the kernel buffer, under the lag
        writer = asyncio.ensure_future(channel.write(data))
        assert await _read_all(a, len(data)) == hashlib.sha256(data).digest()
        await writer
        await wait_for(
            lambda: node.server.snapshot()["channels"]["slow_closed"] == 1, what="too_slow by time"
        )
        assert node.server.snapshot()["channels"]["members"] == 1
        while await s.read():
            pass  # what it had, then EOF
        await channel.write(b"on")
        assert await a.read() == b"on"
        await asyncio.gather(fast.close(), slow.close(), target.close())
    finally:
        await node.stop()


flag_sets = st.sampled_from(["rs", "sr", "rws", "wsr", "ws", "sw", "rw", "r"])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.integers(0, 3), st.sampled_from(["a", "b"]), flag_sets),
        st.tuples(st.just("leave"), st.integers(0, 3), st.sampled_from(["a", "b"]), st.just("")),
        st.tuples(st.just("send"), st.integers(0, 3), st.sampled_from(["a", "b"]), st.just("")),
    ),
    max_size=14,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: each example is a node
)
@given(operations)
def test_generated_joins_leaves_and_sends_get_clear_answers_and_the_channel_stays_whole(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, str, str]]
) -> None:
    async def scenario() -> None:
        node = await start_node(tmp_path_factory.mktemp("node"), channel_max_members=3)
        try:
            target, _offers = await _publisher(node, "a")
            target.shared_ports.add("b")
            devices = [await node.device() for _ in range(4)]
            ports: dict[tuple[int, str], Port] = {}
            remote: dict[int, Port] = {}  # the target's side, by ref
            members: dict[str, list[tuple[int, str]]] = {"a": [], "b": []}  # the model: who is in
            channel_ref: dict[str, int] = {}  # each channel's ref on the target's side

            def listed(name: str) -> bool:
                return any(c["port"] == name for c in node.server.channels.status()["list"])

            for op, who, name, flags in ops:
                device, key = devices[who], (who, name)
                if op == "join" and key not in ports:
                    channel_open = "s" in flags and "r" in flags  # "ws" is an ordinary port
                    joining = channel_open and bool(members[name])
                    expected = None
                    if joining and "w" in flags:
                        expected = codes.FORBIDDEN
                    elif joining and len(members[name]) >= 3:
                        expected = codes.BUSY
                    try:
                        ports[key] = await device.open_port(target.address, name, flags)
                    except RequestRefused as exc:
                        assert exc.code == expected and str(exc), (exc, expected)
                        continue
                    assert expected is None, f"{flags!r} to {name} was accepted, not {expected}"
                    if channel_open:
                        members[name].append(key)
                    if not joining:  # a plain port, or a channel's first opener: the target is asked
                        accepted = await target.accept()
                        assert accepted.ref == ports[key].ref
                        remote[accepted.ref] = accepted
                        if channel_open:
                            channel_ref[name] = accepted.ref
                elif op == "leave" and key in ports:
                    await ports.pop(key).close()
                    if key in members[name]:
                        members[name].remove(key)
                        if not members[name]:  # the last member: the channel ends at the target
                            await wait_for(lambda n=name: not listed(n), what=f"channel {name} closed")
                elif op == "send" and key in ports and "w" in ports[key].flags:
                    await ports[key].write(b"w")
            # Whatever happened: every device is served, and the target reaches every open reader.
            for device in devices:
                assert await device.ping() > 0
            # The target's side of each port still open: plain ports by their opener's ref, and
            # each channel once, by its ref (its owner's, who may have left since).
            in_channels = {key for keys in members.values() for key in keys}
            live = {p.ref for key, p in ports.items() if key not in in_channels}
            live |= {ref for name, ref in channel_ref.items() if members[name]}
            for port in [remote[ref] for ref in live if "r" in remote[ref].flags]:
                await port.write(b"end")
            for (_who, _name), port in ports.items():
                if "r" in port.flags:
                    got = b""
                    while not got.endswith(b"end"):
                        chunk = await port.read()
                        assert chunk, f"reader on ref {port.ref} ended early"
                        got += chunk
            await target.close()
            for port in ports.values():
                while await port.read():
                    pass
            await wait_for(lambda: node.server.snapshot()["ports_open"] == 0, what="all ports closed")
            assert node.server.snapshot()["channels"]["channels"] == 0
            await asyncio.gather(*(d.close() for d in devices))
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
