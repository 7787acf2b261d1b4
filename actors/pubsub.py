"""PubSub: topics between actors. Subscriptions are by registry name, so they outlive restarts.

The last payload of every (topic, key) is retained and replayed to a new subscriber: an RPC actor
that restarts has the node's whole snapshot again at once (it keeps no state of its own).

Delivery is by name, through the registry. A subscriber that is not in this actor's registry
when a payload is published (a restarted one subscribes before the registry push that names it
reaches PubSub) misses it: that is noted, and once the registry names it again it gets the
latest payload of each key it missed (not the whole retained set again). Publishers need not
publish again in case someone missed it.
"""

from __future__ import annotations

from typing import Any

from actors import messages as m
from actors.base import ChrActor


class PubSub(ChrActor):
    def on_start(self, init: m.Init) -> None:
        self.subscribers: dict[str, set[str]] = {}
        self.retained: dict[tuple[str, str], Any] = {}
        # subscriber -> the (topic, key) a publish could not bring it (it was not registered)
        self.missed: dict[str, set[tuple[str, str]]] = {}

    def receiveMsg_RegistryUpdate(self, msg: m.RegistryUpdate, sender: Any) -> None:
        super().receiveMsg_RegistryUpdate(msg, sender)
        for name in [n for n in self.missed if self.registry.get(n) is not None]:
            for topic, key in sorted(self.missed.pop(name)):  # the latest of each, once
                if name in self.subscribers.get(topic, ()) and (topic, key) in self.retained:
                    self.send_to(name, m.Published(topic, key, self.retained[(topic, key)]))

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
            if not self.send_to(name, out):
                self.missed.setdefault(name, set()).add((msg.topic, msg.key))
