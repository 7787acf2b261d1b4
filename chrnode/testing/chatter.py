"""An actor that logs on request, for tests of the node's single log writer (chrnode.logsink)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from actors.base import ChrActor


@dataclass(frozen=True)
class Chatter:
    """Log `count` distinct lines `<prefix> <n> <padding>` of about `size` bytes, then answer."""

    prefix: str
    count: int
    size: int = 200


@dataclass(frozen=True)
class Chattered:
    prefix: str
    pid: int


class Chatterbox(ChrActor):
    def receiveMsg_Chatter(self, msg: Chatter, sender: Any) -> None:
        padding = "x" * max(0, msg.size - len(msg.prefix) - 60)
        for n in range(msg.count):
            self.log.warning("%s %d %s", msg.prefix, n, padding)
        self.send(sender, Chattered(msg.prefix, os.getpid()))
