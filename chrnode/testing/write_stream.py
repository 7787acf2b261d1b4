"""Join a running node's actor system and write a stream of kv rows through Model.Sql.Worker,
printing each key once its commit is acknowledged (the durability test SIGKILLs the node mid-way).

    python -m chrnode.testing.write_stream ADMIN_PORT COUNT
"""

from __future__ import annotations

import sys
from datetime import timedelta

from actors import messages as m
from actors.tree import ROOT
from chrnode.actorsys import loopback_only
from chrnode.storage.ops import KvSet


def main(port: int, count: int) -> int:
    loopback_only()
    from thespian.actors import ActorSystem

    asys = ActorSystem("multiprocTCPBase", {"Admin Port": port})
    wait = timedelta(seconds=10)
    # The daemon created the root supervisor under a global name: this finds it, creates nothing.
    root = asys.createActor("actors.supervisor.Supervisor", globalName=ROOT)
    reply = asys.ask(root, m.WhereIs("Model.Sql.Worker"), wait)
    if not isinstance(reply, m.WhereIsReply) or reply.address is None:
        print(f"no Model.Sql.Worker: {reply!r}", file=sys.stderr)
        return 1
    worker = reply.address
    for i in range(count):
        key = f"durable-{i}"
        answer = asys.ask(worker, m.SqlWrite((KvSet(key, b"x" * 64),), tag=i), wait)
        if not isinstance(answer, m.SqlWritten) or not answer.ok:
            return 1
        print(key, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
