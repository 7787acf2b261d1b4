"""PubSub: topics between actors. Subscriptions are by registry name, so they outlive restarts.

The last payload of every (topic, key) is retained and replayed to a new subscriber: an RPC actor
that restarts has the node's whole snapshot again at once (it keeps no state of its own).
"""

from __future__ import annotations

from typing import Any

from actors import messages as m
from actors.base import ChrActor


class PubSub(ChrActor):
    def on_start(self, init: m.Init) -> None:
        self.subscribers: dict[str, set[str]] = {}
        self.retained: dict[tuple[str, str], Any] = {}

    def receiveMsg_Subscribe(self, msg: m.Subscribe, sender: Any) -> None:
        self.subscribers.setdefault(msg.topic, set()).add(msg.subscriber)
        self.log.debug("%s subscribed to %s", msg.subscriber, msg.topic)
        for (topic, key), payload in self.retained.items():
            if topic == msg.topic:
                self.send(sender, m.Published(topic, key, payload))

    def receiveMsg_Unsubscribe(self, msg: m.Unsubscribe, sender: Any) -> None:
        self.subscribers.get(msg.topic, set()).discard(msg.subscriber)

    def receiveMsg_Publish(self, msg: m.Publish, sender: Any) -> None:
        self.retained[(msg.topic, msg.key)] = msg.payload
        self.stats.incr("pubsub_messages_total")
        out = m.Published(msg.topic, msg.key, msg.payload)
        for name in tuple(self.subscribers.get(msg.topic, ())):
            self.send_to(name, out)
