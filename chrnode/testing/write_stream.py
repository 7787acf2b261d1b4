"""Join a running node's actor system and write a stream of kv rows through Model.Sql.Worker,
printing each key once its commit is acknowledged (the durability test SIGKILLs the node mid-way).

    python -m chrnode.testing.write_stream ADMIN_PORT COUNT
"""

from __future__ import annotations

import sys

from actors import messages as m
from chrnode.storage.ops import KvSet
from chrnode.testing.join import joined


def main(port: int, count: int) -> int:
    with joined(port) as system:
        worker = system.address("Model.Sql.Worker")
        for i in range(count):
            key = f"durable-{i}"
            answer = system.asys.ask(worker, m.SqlWrite((KvSet(key, b"x" * 64),), tag=i), 10)
            if not isinstance(answer, m.SqlWritten) or not answer.ok:
                return 1
            print(key, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
