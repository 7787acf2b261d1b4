"""The TLS transport and the zero-copy frame reader: buffers, backpressure, closing (SPEC 3, 13)."""

from __future__ import annotations

import asyncio
import ctypes
import random
import ssl
import struct
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.edge import reader as frame_reader
from chrnode.edge.messages import encode_portsend_parts
from chrnode.edge.ports import parse_portsend
from chrnode.edge.reader import POOL_MIN, FrameReader
from chrnode.edge.tlsconn import TlsConnection
from chrnode.edge.tlslisten import open_tls_connection, start_tls_server
from chrnode.errors import FrameError
from chrnode.identity import edge_client_context, edge_server_context, load_node_identity
from chrnode.testing.edge import async_test, wait_for

SSL_CTRL_MODE = 33
SSL_MODE_RELEASE_BUFFERS = 0x10


def _ssl_ctx_mode(ctx: ssl.SSLContext) -> int:
    """SSL_CTX_get_mode() of a Python context, through the libssl that _ssl is linked with."""
    with open("/proc/self/maps") as maps:
        libssl = next(line.split()[-1] for line in maps if "libssl" in line)
    lib = ctypes.CDLL(libssl)
    lib.SSL_CTX_ctrl.restype = ctypes.c_long
    lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    # PySSLContext starts with PyObject_HEAD (16 bytes on 64-bit CPython), then SSL_CTX *ctx.
    pointer = ctypes.c_void_p.from_address(id(ctx) + 16).value
    return int(lib.SSL_CTX_ctrl(pointer, SSL_CTRL_MODE, 0, None))


def test_cpython_sets_release_buffers_on_edge_contexts(tmp_path: Path) -> None:
    identity = load_node_identity(tmp_path)
    for ctx in (edge_server_context(identity.key_pem_path, identity.cert_path), edge_client_context()):
        assert _ssl_ctx_mode(ctx) & SSL_MODE_RELEASE_BUFFERS


class _Collector(FrameReader):
    """FrameReader that records what it delivers (owned bytearray or volatile view)."""

    def __init__(self, max_frame: int = 1 << 20) -> None:
        super().__init__(max_frame)
        self.frames: list[tuple[int, int, bytes, bool]] = []
        self.faults: list[FrameError] = []

    def frame_received(self, msg_type: int, flags: int, frame: bytearray | memoryview) -> None:
        self.frames.append((msg_type, flags, bytes(frame), isinstance(frame, bytearray)))

    def frame_fault(self, error: FrameError) -> None:
        self.faults.append(error)

    def feed(self, data: bytes) -> None:
        """Act like the transport: decrypt into whatever get_buffer() hands out."""
        view = memoryview(data)
        while view:
            buf = self.get_buffer()
            n = min(len(buf), len(view), 16384)
            buf[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)


def _frame(msg_type: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BBHI", 2, msg_type, flags, len(payload)) + payload


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 7), st.binary(max_size=70000)), min_size=1, max_size=6
    ),
    st.lists(st.integers(1, 40000), min_size=1, max_size=20),
)
def test_reader_reassembles_frames_split_anywhere(
    frames: list[tuple[int, int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(_frame(t, p, f) for t, f, p in frames)
    reader = _Collector()
    pos = 0
    for cut in cuts * (len(stream) // max(sum(cuts), 1) + 1):
        if pos >= len(stream):
            break
        reader.feed(stream[pos : pos + cut])
        pos += cut
    reader.feed(stream[pos:])
    assert [(t, f, frame[8:]) for t, f, frame, _owned in reader.frames] == [(t, f, p) for t, f, p in frames]
    assert reader.assembling == 0 and not reader.faults


def test_reader_refuses_oversized_and_wrong_version_before_buffering() -> None:
    reader = _Collector(max_frame=1000)
    reader.feed(struct.pack(">BBHI", 2, 4, 0, 5000))
    assert reader.faults[0].code == "frame_too_large" and reader.assembling == 0
    reader = _Collector()
    reader.feed(struct.pack(">BBHI", 1, 4, 0, 5) + b"hello")
    assert reader.faults[0].code == "bad_frame" and not reader.frames


def test_large_frames_are_owned_small_frames_are_views() -> None:
    reader = _Collector()
    small, large = _frame(6, b"x" * 10), _frame(4, b"y" * 200_000)
    reader.feed(small + large)
    assert [owned for *_rest, owned in reader.frames] == [False, True]


class _Keeper(FrameReader):
    """FrameReader whose consumer keeps some delivered frames by reference (as the port table's
    credit queue or a write queue does), as the bytearray itself or a memoryview of it."""

    def __init__(self, keep: list[int]) -> None:
        super().__init__(1 << 20)
        self.keep = keep  # per frame: 0 drop it, 1 keep the bytearray, 2 keep a memoryview
        self.seen: list[bytes] = []  # what each frame held when it was delivered
        self.kept: list[tuple[int, bytearray | memoryview]] = []

    def frame_received(self, msg_type: int, flags: int, frame: bytearray | memoryview) -> None:
        index = len(self.seen)
        self.seen.append(bytes(frame))
        if isinstance(frame, bytearray):
            how = self.keep[index % len(self.keep)]
            if how == 1:
                self.kept.append((index, frame))
            elif how == 2:
                self.kept.append((index, memoryview(frame)[8:]))

    def frame_fault(self, error: FrameError) -> None:
        raise AssertionError(error)

    def feed_cut(self, stream: bytes, cuts: list[int]) -> None:
        view = memoryview(stream)
        step = 0
        while view:
            buf = self.get_buffer()
            n = min(len(buf), len(view), cuts[step % len(cuts)])
            step += 1
            buf[:n] = view[:n]
            view = view[n:]
            del buf  # like the transport's loop: its view of the buffer goes with the next read
            self.buffer_updated(n)


def _payload(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def empty_pool() -> None:
    frame_reader._pool.free.clear()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([POOL_MIN - 8, POOL_MIN, POOL_MIN + 3, 100, 0]), min_size=2, max_size=12),
    st.lists(st.integers(0, 2), min_size=1, max_size=5),
    st.lists(st.integers(1, 40000), min_size=1, max_size=10),
)
def test_recycled_frame_buffers_never_overwrite_a_kept_frame(
    sizes: list[int], keep: list[int], cuts: list[int]
) -> None:
    frame_reader._pool.free.clear()
    payloads = [_payload(i, size) for i, size in enumerate(sizes)]
    frames = [_frame(4, p) for p in payloads]
    reader = _Keeper(keep)
    reader.feed_cut(b"".join(frames), cuts)
    assert reader.seen == frames  # each arrived intact, split wherever the cuts fell
    for index, held in reader.kept:  # and what a consumer kept was not reused under it
        assert bytes(held) == (frames[index] if isinstance(held, bytearray) else payloads[index])
    assert reader.assembling == 0


def test_frames_cut_at_every_boundary_arrive_intact(empty_pool: None) -> None:
    """Two large frames of one size (the second may reuse the first's buffer) and small ones
    around them, the stream cut once at every position near a frame's edges and in its header."""
    payloads = [_payload(1, 10), _payload(2, POOL_MIN), _payload(3, 3), _payload(4, POOL_MIN)]
    frames = [_frame(4, p) for p in payloads]
    stream = b"".join(frames)
    edges = [0]
    for frame in frames:
        edges.append(edges[-1] + len(frame))
    positions = sorted({p for edge in edges for p in range(edge - 9, edge + 10) if 0 < p < len(stream)})
    for keep in ([0], [1], [2]):
        for cut in positions:
            frame_reader._pool.free.clear()
            reader = _Keeper(keep)
            reader.feed_cut(stream[:cut], [1 << 20])
            reader.feed_cut(stream[cut:], [1 << 20])
            assert reader.seen == frames, (keep, cut)
            for index, held in reader.kept:
                assert bytes(held) == (frames[index] if isinstance(held, bytearray) else payloads[index])


def test_a_dropped_frame_buffer_is_reused_a_held_one_never(empty_pool: None) -> None:
    frames = [_frame(4, _payload(i, POOL_MIN)) for i in range(4)]
    dropped = _Keeper([0])
    dropped.feed_cut(b"".join(frames), [16384])
    assert len(frame_reader._pool.free) == 1  # one buffer for all four: nothing held it
    frame_reader._pool.free.clear()
    for how in (1, 2):  # the bytearray kept, or only a memoryview of it
        held = _Keeper([how])
        held.feed_cut(b"".join(frames), [16384])
        assert len(frame_reader._pool.free) == 4  # a new buffer each: every one was held
        frame_reader._pool.free.clear()
        assert [bytes(frame) for _i, frame in held.kept] == (
            frames if how == 1 else [frame[8:] for frame in frames]
        )
    small = _Keeper([0])
    small.feed_cut(b"".join(_frame(4, _payload(i, 1000)) for i in range(3)), [300])
    assert frame_reader._pool.free == [] or all(len(b) >= POOL_MIN for b in frame_reader._pool.free)


@given(st.integers(0, 2**64 - 1), st.binary(max_size=70000))
def test_portsend_fast_path_matches_the_codec(ref: int, data: bytes) -> None:
    header, body = encode_portsend_parts(ref, data)
    frame = header + body
    assert parse_portsend(frame) == (ref, len(frame) - len(data), len(frame))
    assert parse_portsend(frame + b"\x00") is None  # trailing bytes: left to the full decoder


class _Sink:
    """A TlsProtocol that records and can stop reading (a slow reader)."""

    def __init__(self) -> None:
        self.conn: TlsConnection | None = None
        self.received = bytearray()
        self.paused = 0
        self.resumed = 0
        self.lost: list[BaseException | None] = []
        self._buf = bytearray(65536)

    def connection_made(self, conn: TlsConnection) -> None:
        self.conn = conn

    def get_buffer(self) -> memoryview:
        return memoryview(self._buf)

    def buffer_updated(self, nbytes: int) -> None:
        self.received += self._buf[:nbytes]

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1


async def _pair(tmp_path: Path) -> tuple[_Sink, _Sink, object]:
    identity = load_node_identity(tmp_path)
    server_ctx = edge_server_context(identity.key_pem_path, identity.cert_path)
    server_side = _Sink()
    listener = start_tls_server(
        asyncio.get_running_loop(), server_ctx, "127.0.0.1", 0, lambda _a: server_side, 5.0
    )
    client_side = _Sink()
    await open_tls_connection("127.0.0.1", listener.port, edge_client_context(), client_side)
    await wait_for(lambda: server_side.conn is not None, what="server side up")
    return server_side, client_side, listener


@async_test()
async def test_write_backpressure_pauses_and_resumes(tmp_path: Path) -> None:
    server_side, client_side, listener = await _pair(tmp_path)
    assert server_side.conn is not None and client_side.conn is not None
    client_side.conn.pause_reading()  # a reader that stops reading
    block = b"b" * 65536
    for _ in range(200):  # 12.5 MiB: more than kernel buffers and the high-water mark
        server_side.conn.write(block)
    assert server_side.paused == 1
    assert server_side.conn.get_write_buffer_size() > 0
    client_side.conn.resume_reading()
    await wait_for(lambda: len(client_side.received) == 200 * 65536, what="all data read")
    assert server_side.resumed == 1 and server_side.conn.get_write_buffer_size() == 0
    client_side.conn.close()
    await wait_for(lambda: bool(server_side.lost), what="peer close seen")
    listener.close()  # type: ignore[attr-defined]


@async_test()
async def test_close_flushes_queued_data_abort_drops_it(tmp_path: Path) -> None:
    server_side, client_side, listener = await _pair(tmp_path)
    assert server_side.conn is not None and client_side.conn is not None
    client_side.conn.pause_reading()
    for _ in range(100):
        server_side.conn.write(b"c" * 65536)
    server_side.conn.close()
    assert not server_side.lost  # still flushing
    client_side.conn.resume_reading()
    await wait_for(lambda: bool(client_side.lost), what="close after flush")
    assert len(client_side.received) == 100 * 65536
    await server_side.conn.wait_closed()
    assert server_side.lost == [None]

    server_side, client_side, _second = await _pair(tmp_path / "b")
    assert server_side.conn is not None and client_side.conn is not None
    server_side.conn.write(b"d" * 10)
    server_side.conn.abort()
    await wait_for(lambda: bool(client_side.lost), what="abort seen")
    listener.close()  # type: ignore[attr-defined]
    _second.close()  # type: ignore[attr-defined]


@async_test()
async def test_handshake_needs_secp256k1(tmp_path: Path) -> None:
    identity = load_node_identity(tmp_path)
    server_ctx = edge_server_context(identity.key_pem_path, identity.cert_path)
    listener = start_tls_server(
        asyncio.get_running_loop(), server_ctx, "127.0.0.1", 0, lambda _a: _Sink(), 5.0
    )
    other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    other.check_hostname, other.verify_mode = False, ssl.CERT_NONE
    other.set_ecdh_curve("prime256v1")  # a client without the secp256k1 group: no shared suite
    with pytest.raises(ssl.SSLError):
        await open_tls_connection("127.0.0.1", listener.port, other, _Sink())
    await wait_for(lambda: listener.handshakes_failed == 1, what="failure counted")
    listener.close()


@given(st.binary(max_size=40), st.integers(0, 2**64 - 1), st.binary(max_size=300))
def test_portsend_fast_path_never_raises_on_truncated_or_odd_payloads(
    cut: bytes, ref: int, data: bytes
) -> None:
    header, body = encode_portsend_parts(ref, data)
    frame = header + body
    for size in range(8, min(len(frame), 40)):
        parse_portsend(frame[:size])  # must return None or a tuple, never raise
    parse_portsend(frame[:8] + cut)
    reordered = msgpack.packb({"data": data, "ref": ref}, use_bin_type=True)
    other_order = struct.pack(">BBHI", 2, 4, 0, len(reordered)) + reordered
    parsed = parse_portsend(other_order)
    assert parsed is not None and parsed[0] == ref and other_order[parsed[1] : parsed[2]] == data


@async_test()
async def test_large_writes_are_corked_only_while_written(tmp_path: Path) -> None:
    """A large write goes out under TCP_CORK (full segments, not one per TLS record), and the
    socket is uncorked again when the write returns, sent at once or queued, so what follows,
    however small, is never held back by the cork."""
    import socket

    from chrnode.edge.tlsconn import CORK_MIN

    server_side, client_side, listener = await _pair(tmp_path)
    assert server_side.conn is not None and client_side.conn is not None
    raw = socket.socket(fileno=server_side.conn.fd)  # a second object on the same descriptor
    try:

        def corked() -> int:
            return raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK)

        block = bytes(range(256)) * (CORK_MIN // 256 * 4)
        client_side.conn.pause_reading()  # the kernel fills: later writes are queued and flushed
        for _ in range(60):
            server_side.conn.write(block)
            assert corked() == 0
        assert server_side.conn.get_write_buffer_size() > 0
        server_side.conn.write(b"tail")
        client_side.conn.resume_reading()
        total = 60 * len(block) + 4
        await wait_for(lambda: len(client_side.received) == total, what="all data read")
        assert corked() == 0 and server_side.conn.get_write_buffer_size() == 0
        assert bytes(client_side.received) == block * 60 + b"tail"
        server_side.conn.write(b"small")  # not corked, not waiting for anything
        await wait_for(lambda: client_side.received.endswith(b"small"), what="a small write after")
    finally:
        raw.detach()
        client_side.conn.close()
        listener.close()  # type: ignore[attr-defined]
