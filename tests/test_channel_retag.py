"""One received portsend frame re-addressed to each channel member (chrnode.edge.retag), pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chrnode.edge.messages import PORTSEND, PortSend, encode_message
from chrnode.edge.retag import Retag

refs = st.one_of(st.integers(1, 2**63 - 1), st.integers(2**32, 2**63 - 1), st.integers(0, 300))


@given(refs, st.lists(refs, min_size=1, max_size=6), st.binary(max_size=70_000), st.booleans())
def test_every_member_gets_exactly_the_frame_for_its_ref_and_the_buffer_is_restored(
    original: int, targets: list[int], data: bytes, writable: bool
) -> None:
    encoded = encode_message(PortSend(ref=original, data=data))
    frame = bytearray(encoded) if writable else encoded
    retag = Retag(frame)
    assert retag.valid and bytes(retag.data) == data
    for ref in targets:
        out = retag.frame_for(ref)
        assert bytes(out) == encode_message(PortSend(ref=ref, data=data))
        if isinstance(out, memoryview):
            out[1] = 0x25  # a peer link's end retypes it in place: the next member must not see that
    retag.restore()
    assert bytes(frame) == encoded


def test_same_width_refs_reuse_the_buffer_without_a_copy() -> None:
    frame = bytearray(encode_message(PortSend(ref=2**62 + 5, data=b"x" * 1000)))
    out = Retag(frame).frame_for(2**40 + 7)
    assert isinstance(out, memoryview) and out.obj is frame and out[1] == PORTSEND


def test_a_frame_that_is_not_a_plain_portsend_is_not_valid() -> None:
    assert not Retag(encode_message(PortSend(ref=5, data=b"x", id=3))).valid
    assert not Retag(b"\x02\x04\x00\x00\x00\x00\x00\x01\x80").valid
