"""EdgeV2 frame codec (SPEC 4): exact bytes in, frames out."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chrnode.edge import codes
from chrnode.edge.frame import (
    FLAG_COMPRESSED,
    FLAG_ERROR,
    FLAG_RESPONSE,
    Frame,
    FrameDecoder,
    checked_frame,
    encode_frame,
    encode_frame_parts,
    encode_header,
)
from chrnode.errors import FrameError, LocalProtocolError, RemoteProtocolError


def frame_bytes(msg_type: int, payload: bytes, flags: int = 0, version: int = 2) -> bytes:
    return struct.pack(">BBHI", version, msg_type, flags, len(payload)) + payload


def drain(decoder: FrameDecoder) -> list[Frame]:
    return list(decoder)


def test_encode_is_byte_exact() -> None:
    payload = b"\x81\xa2id\x07"  # msgpack {"id": 7}
    assert encode_frame(0x06, payload) == bytes.fromhex("0206000000000005") + payload
    assert encode_frame(0x06, payload, FLAG_RESPONSE) == bytes.fromhex("0206000100000005") + payload
    assert encode_frame(0x01, b"", FLAG_RESPONSE | FLAG_ERROR) == bytes.fromhex("0201000300000000")
    header, body = encode_frame_parts(0x04, memoryview(b"abc"))
    assert header == bytes.fromhex("0204000000000003") and bytes(body) == b"abc"
    assert encode_header(0x27, 0xFFFF_FFFF) == bytes.fromhex("0227 0000 ffffffff")


def test_encode_refuses_what_breaks_the_protocol() -> None:
    with pytest.raises(LocalProtocolError, match="type"):
        encode_frame(256, b"")
    with pytest.raises(LocalProtocolError, match="flags"):
        encode_frame(1, b"", 0x08)
    with pytest.raises(LocalProtocolError, match="compress=True"):
        encode_frame(1, b"", FLAG_COMPRESSED)
    with pytest.raises(LocalProtocolError, match="32-bit"):
        encode_header(1, 2**32)


def test_whole_frame_in_one_chunk() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(0x06, b"\x80"))
    assert decoder.next_frame() == Frame(0x06, 0, b"\x80")
    assert decoder.next_frame() is None
    assert decoder.buffered == 0


def test_byte_by_byte() -> None:
    data = frame_bytes(0x04, b"hello world", FLAG_RESPONSE)
    decoder = FrameDecoder()
    for i, byte in enumerate(data):
        assert decoder.next_frame() is None, f"frame complete after only {i} bytes"
        decoder.feed(bytes([byte]))
    frame = decoder.next_frame()
    assert frame == Frame(0x04, FLAG_RESPONSE, b"hello world")
    assert frame.is_response and not frame.is_error
    assert decoder.next_frame() is None


def test_two_frames_and_trailing_partial_in_one_chunk() -> None:
    one, two, three = frame_bytes(1, b"a"), frame_bytes(2, b"bc"), frame_bytes(3, b"def")
    decoder = FrameDecoder()
    decoder.feed(one + two + three[:5])
    assert drain(decoder) == [Frame(1, 0, b"a"), Frame(2, 0, b"bc")]
    assert decoder.buffered == 5
    decoder.feed(memoryview(three)[5:])
    assert drain(decoder) == [Frame(3, 0, b"def")]


def test_empty_payload() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(6, b""))
    assert decoder.next_frame() == Frame(6, 0, b"")


def test_truncated_at_end_of_stream() -> None:
    data = frame_bytes(4, b"abcdef")
    for cut in (3, 8, 10):
        decoder = FrameDecoder()
        decoder.feed(data[:cut])
        assert decoder.next_frame() is None
        decoder.feed_eof()
        with pytest.raises(FrameError, match="stream ended inside") as info:
            decoder.next_frame()
        assert info.value.code == codes.BAD_FRAME


def test_clean_end_of_stream() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(6, b"\x80"))
    decoder.feed_eof()
    assert decoder.next_frame() == Frame(6, 0, b"\x80")
    assert decoder.next_frame() is None
    with pytest.raises(LocalProtocolError):
        decoder.feed(b"x")


def test_oversized_length_refused_from_the_header_alone() -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    decoder.feed(struct.pack(">BBHI", 2, 4, 0, 1001))  # header only, not one payload byte
    with pytest.raises(FrameError, match="over the 1000-byte limit") as info:
        decoder.next_frame()
    assert info.value.code == codes.FRAME_TOO_LARGE
    assert decoder.buffered == 0  # nothing kept
    with pytest.raises(FrameError):  # the decoder stays failed: the stream is out of sync
        decoder.feed(b"more")


def test_limit_is_inclusive() -> None:
    decoder = FrameDecoder(max_frame_size=16)
    decoder.feed(frame_bytes(4, bytes(16)))
    assert decoder.next_frame() == Frame(4, 0, bytes(16))


def test_wrong_version_is_fatal() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(6, b"\x80", version=1) + frame_bytes(6, b"\x80"))
    with pytest.raises(FrameError, match="version must be 2, got 1"):
        decoder.next_frame()
    with pytest.raises(FrameError):
        decoder.next_frame()


def test_reserved_flags_consume_the_frame_and_report_its_id() -> None:
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(6, b"\x81\xa2id\x2a", flags=0x0010) + frame_bytes(6, b"\x80"))
    with pytest.raises(RemoteProtocolError, match="reserved bits") as info:
        decoder.next_frame()
    assert not isinstance(info.value, FrameError)
    assert info.value.code == codes.BAD_FRAME and info.value.request_id == 42
    assert decoder.next_frame() == Frame(6, 0, b"\x80")  # still in sync


def test_unknown_type_is_framed_normally() -> None:
    # The frame layer delimits any type; decode_payload names it unknown (with the id).
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(0x7F, b"\x80"))
    assert decoder.next_frame() == Frame(0x7F, 0, b"\x80")


def test_compressed_round_trip_and_flag_cleared() -> None:
    payload = b"\x81\xa4data\xc5\x10\x00" + bytes(4096)
    data = encode_frame(4, payload, FLAG_RESPONSE, compress=True)
    assert data[3] & FLAG_COMPRESSED and len(data) < len(payload)
    decoder = FrameDecoder()
    decoder.feed(data)
    assert decoder.next_frame() == Frame(4, FLAG_RESPONSE, payload)


def test_compress_skipped_when_it_does_not_help() -> None:
    assert encode_frame(4, b"\x80", compress=True) == frame_bytes(4, b"\x80")


def test_decompression_bomb_refused() -> None:
    bomb = zlib.compress(bytes(10 * 1024 * 1024), 9)  # 10 MiB of zeros in ~10 KiB
    decoder = FrameDecoder(max_frame_size=64 * 1024)
    decoder.feed(frame_bytes(4, bomb, FLAG_COMPRESSED) + frame_bytes(6, b"\x80"))
    with pytest.raises(RemoteProtocolError, match="more than the 65536-byte") as info:
        decoder.next_frame()
    assert info.value.code == codes.FRAME_TOO_LARGE
    assert decoder.next_frame() == Frame(6, 0, b"\x80")


def test_decompressed_exactly_at_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_size=4096)
    decoder.feed(frame_bytes(4, zlib.compress(bytes(4096)), FLAG_COMPRESSED))
    assert decoder.next_frame() == Frame(4, 0, bytes(4096))


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"not zlib at all", "not a valid zlib stream"),
        (zlib.compress(b"x" * 100)[:-3], "truncated"),
        (zlib.compress(b"x") + b"junk", "after the end"),
    ],
)
def test_bad_compressed_payloads(payload: bytes, match: str) -> None:
    decoder = FrameDecoder()
    decoder.feed(frame_bytes(4, payload, FLAG_COMPRESSED))
    with pytest.raises(RemoteProtocolError, match=match) as info:
        decoder.next_frame()
    assert info.value.code == codes.BAD_COMPRESSION


def test_checked_frame_for_other_transports() -> None:
    view = memoryview(b"\x80")
    assert checked_frame(6, FLAG_RESPONSE, view, 100).payload == view
    compressed = zlib.compress(b"\x80" * 50)
    assert checked_frame(6, FLAG_COMPRESSED, compressed, 100) == Frame(6, 0, b"\x80" * 50)
    with pytest.raises(RemoteProtocolError):
        checked_frame(6, 0x8000, b"", 100)


def test_long_stream_is_linear() -> None:
    # Many frames fed in odd-sized chunks come out intact (exercises compaction of the buffer).
    frames = [frame_bytes(4, bytes([i % 256]) * (i % 700)) for i in range(3000)]
    stream = b"".join(frames)
    decoder = FrameDecoder()
    out: list[Frame] = []
    for start in range(0, len(stream), 65_521):
        decoder.feed(stream[start : start + 65_521])
        out.extend(decoder)
    assert [f.payload for f in out] == [bytes([i % 256]) * (i % 700) for i in range(3000)]
    assert decoder.buffered == 0


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.integers(0, 255), st.sampled_from([0, 1, 3]), st.binary(max_size=300)), max_size=8
    ),
    cuts=st.lists(st.integers(1, 50), max_size=30),
)
def test_round_trip_any_chunking(frames: list[tuple[int, int, bytes]], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(t, p, f) for t, f, p in frames)
    decoder = FrameDecoder()
    out: list[Frame] = []
    pos = 0
    for cut in [*cuts, len(stream)]:
        decoder.feed(stream[pos : pos + cut])
        pos += cut
        out.extend(decoder)
    assert out == [Frame(t, f, p) for t, f, p in frames]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 200))
def test_garbage_only_raises_protocol_errors(data: bytes, limit: int) -> None:
    decoder = FrameDecoder(max_frame_size=limit)
    try:
        decoder.feed(data)
        frames = list(decoder)
        decoder.feed_eof()
        frames += list(decoder)
    except RemoteProtocolError as exc:
        assert exc.code in codes.ERROR_CODES
    else:
        assert all(len(f.payload) <= limit for f in frames)
