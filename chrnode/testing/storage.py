"""Child processes for the storage tests (real processes, SPEC 10).

python -m chrnode.testing.storage write-stream PATH   write KvSet batches forever; after each
                                                      commit print the batch number (the ack)
python -m chrnode.testing.storage read PATH KEY        print the value of KEY as hex, or "-"
"""

from __future__ import annotations

import sys
from pathlib import Path

from chrnode.storage import KvSet, Reader, Writer, open_database

STREAM_BATCH = 3
STREAM_LIMIT = 1_000_000  # never run forever if the parent vanished without killing us


def stream_key(batch: int, index: int) -> str:
    return f"k{batch:07d}.{index}"


def stream_value(batch: int, index: int) -> bytes:
    return f"value of batch {batch} item {index}".encode() * 4


def write_stream(path: Path) -> None:
    db = open_database(path)
    writer = Writer(db)
    out = sys.stdout
    for batch in range(STREAM_LIMIT):
        writer.apply([KvSet(stream_key(batch, i), stream_value(batch, i)) for i in range(STREAM_BATCH)])
        # apply() returned: the batch is committed, so it may be acknowledged.
        out.write(f"{batch}\n")
        out.flush()


def read_key(path: Path, key: str) -> None:
    db = open_database(path, readonly=True)
    try:
        value = Reader(db).kv_get(key)
    finally:
        db.shutdown()
    sys.stdout.write("-\n" if value is None else value.hex() + "\n")


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "write-stream":
        write_stream(Path(argv[1]))
        return 0
    if len(argv) == 3 and argv[0] == "read":
        read_key(Path(argv[1]), argv[2])
        return 0
    sys.stderr.write(__doc__ or "")
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
