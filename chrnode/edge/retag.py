"""One portsend frame written to several refs in turn (channels, SPEC 4 ``s``), pure.

A channel delivers what its target sent to every member, each on its own ref. The frame the
target's data was decrypted into is reused for each member: its ref field is overwritten in place
with the member's ref (random 63-bit refs all take the 9-byte msgpack uint64, so the layout does
not change) and a memoryview of it is passed on, which a connection copies only if it cannot send
at once (chrnode.edge.tlsconn). Where the sizes differ, or the buffer is read-only, a new frame is
built for that member. ``restore`` puts the original ref (and type byte) back.
"""

from __future__ import annotations

import msgpack

from chrnode.edge.messages import PORTSEND, encode_portsend_parts
from chrnode.edge.portsend import parse_portsend

__all__ = ["Retag"]

Frame = bytes | bytearray | memoryview

_CANONICAL = b"\x82\xa3ref"  # fixmap(2), "ref": where every client puts the ref (portsend.py)
_REF_AT = 8 + len(_CANONICAL)
_UINT_WIDTH = {0xCC: 2, 0xCD: 3, 0xCE: 5, 0xCF: 9}  # msgpack uint8..uint64, tag included


class Retag:
    """``Retag(frame)`` then ``frame_for(ref)`` per member; ``valid`` is False if ``frame`` is not
    a portsend frame of the usual shape (parse_portsend)."""

    __slots__ = ("_original", "_view", "data", "valid")

    def __init__(self, frame: Frame) -> None:
        parsed = parse_portsend(frame)
        self.valid = parsed is not None
        whole = memoryview(frame)
        self.data = whole[parsed[1] : parsed[2]] if parsed is not None else whole[0:0]
        self._view: memoryview | None = None
        self._original = b""
        if parsed is None or whole.readonly or bytes(whole[8:_REF_AT]) != _CANONICAL:
            return
        width = _UINT_WIDTH.get(frame[_REF_AT], 1 if frame[_REF_AT] < 0x80 else 0)
        if width:
            self._original = bytes(whole[_REF_AT : _REF_AT + width])
            self._view = whole

    def frame_for(self, ref: int) -> Frame:
        """The frame carrying ``ref`` and the same data (valid until the next call or restore)."""
        view = self._view
        packed = msgpack.packb(ref)
        if view is not None and len(packed) == len(self._original):
            view[_REF_AT : _REF_AT + len(packed)] = packed
            view[1] = PORTSEND  # a peer link's end turns it into relay portsend in place
            return view
        header, _ = encode_portsend_parts(ref, self.data)
        out = bytearray(header)
        out += self.data
        return out

    def restore(self) -> None:
        view = self._view
        if view is not None:
            view[_REF_AT : _REF_AT + len(self._original)] = self._original
            view[1] = PORTSEND
