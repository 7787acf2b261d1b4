"""What the node does with each device request (SPEC 3, 4, 5); the session only frames and routes.

Requests that need a hook (tickets, names, DHT records) run as tasks of the server, so a slow
chain read delays only that request's answer; answers may come out of order (SPEC 4).

Finding the target of a portopen is asynchronous: a device connected here is found at once;
otherwise the host's ``find_device`` asks further (the network, through a resolver that will ask
the DHT; without one the answer is ``not_found``). The handlers know their server only as a
:class:`HandlerHost`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from chrnode.edge import codes
from chrnode.edge.frame import VERSION
from chrnode.edge.hello import verify_hello
from chrnode.edge.messages import (
    GETNODE,
    GETOBJECT,
    HELLO,
    PORTCLOSE,
    PORTOPEN,
    PORTSEND,
    RESOLVE,
    TICKET,
    Ack,
    GetNode,
    GetNodeReply,
    GetObject,
    GetObjectReply,
    Hello,
    HelloReply,
    Message,
    Notify,
    Ping,
    PingReply,
    PortClose,
    PortOpen,
    PortSend,
    Resolve,
    ResolveReply,
    TicketMsg,
    TicketReply,
    TicketRequest,
    encode_portsend_parts,
)
from chrnode.edge.ports import PortEnd, PortTable, describe
from chrnode.edge.session import Session
from chrnode.errors import ChrError, NameError_, RemoteProtocolError, TicketError
from chrnode.ticket import TicketTooLowError

if TYPE_CHECKING:
    import asyncio

    from chrnode.config import Config
    from chrnode.edge.hooks import DevicePresence, EdgeHooks
    from chrnode.edge.usage import DeviceAccount, TicketDesk

__all__ = ["HandlerHost", "Handlers"]

_log = logging.getLogger("chrnode.edge")

MIN_CHECK_STEP = 64 * 1024


class HandlerHost(Protocol):
    """What the handlers need of the server (implemented by EdgeServer)."""

    config: Config
    hooks: EdgeHooks
    desk: TicketDesk
    ports: PortTable
    devices: dict[bytes, Session]
    node_address: bytes
    fleet: bytes
    epoch: int
    tickets_accepted: int
    presence: DevicePresence | None

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def count_error(self, code: str) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...

    def register_device(self, session: Session, device: bytes) -> DeviceAccount: ...

    def own_record(self) -> dict[str, Any]: ...

    async def find_device(self, device: bytes) -> PortEnd | None:
        """The end serving ``device``: this node's session, else one the network found, else None."""
        ...


class Handlers:
    """Request handlers of one EdgeServer."""

    def __init__(self, server: HandlerHost) -> None:
        self.server = server
        self.config = server.config

    # ---- hello (SPEC 3) ---------------------------------------------------------------------

    def before_hello(self, session: Session, msg: Message) -> None:
        if not isinstance(msg, Hello):
            msg_type = getattr(msg, "TYPE", 0)
            session.server.count_error(codes.HELLO_REQUIRED)
            session.error(
                msg_type,
                getattr(msg, "id", None),
                codes.HELLO_REQUIRED,
                "the first message of a session must be hello (SPEC 3)",
                close=True,
            )
            return
        if msg.version != VERSION:
            self.server.count_error(codes.UNSUPPORTED_VERSION)
            session.error(
                HELLO,
                msg.id,
                codes.UNSUPPORTED_VERSION,
                f"hello version {msg.version} is not supported; this node speaks {VERSION}",
                close=True,
            )
            return
        assert session.conn is not None
        try:
            verify_hello(msg.device, msg.device_sig, session.conn.channel_binding(), self.server.node_address)
        except RemoteProtocolError as exc:
            self.server.count_error(exc.code)
            session.error(HELLO, msg.id, exc.code, str(exc), close=True)
            return
        server = self.server
        account = server.register_device(session, msg.device)
        session.authenticated(msg.device, account, msg.compress)
        if server.presence is not None:
            server.presence.device_hello(msg.device, session.conn.channel_binding(), msg.device_sig)
        session.send(
            HelloReply(
                node=server.node_address,
                version=VERSION,
                epoch=server.epoch,
                chain_id=self.config.chain_id,
                fleet=server.fleet,
                id=msg.id,
            )
        )
        session.next_check(self._check_step())

    # ---- requests after hello ---------------------------------------------------------------

    def dispatch(self, session: Session, msg: Message) -> None:
        if isinstance(msg, PortSend):
            self._portsend(session, msg)
        elif isinstance(msg, PortOpen):
            self._portopen(session, msg)
        elif isinstance(msg, PortClose):
            self._portclose(session, msg)
        elif isinstance(msg, Ping):
            if msg.id is not None:
                session.send(PingReply(time=int(time.time() * 1000), id=msg.id))
        elif isinstance(msg, TicketMsg):
            self.server.spawn(self._ticket(session, msg))
        elif isinstance(msg, GetNode):
            self._getnode(session, msg)
        elif isinstance(msg, GetObject):
            self.server.spawn(self._getobject(session, msg))
        elif isinstance(msg, Resolve):
            self.server.spawn(self._resolve(session, msg))
        elif isinstance(msg, Notify):
            _log.debug("%s sent notify %s: %s", session.label(), msg.code, msg.message)
        else:
            msg_type = getattr(msg, "TYPE", getattr(msg, "msg_type", 0))
            self.server.count_error(codes.UNEXPECTED_MESSAGE)
            session.error(
                msg_type,
                getattr(msg, "id", None),
                codes.UNEXPECTED_MESSAGE,
                f"{type(msg).__name__} is not a request a device may send to a node",
            )
            session.fault()

    # ---- ports ------------------------------------------------------------------------------

    def _portopen(self, session: Session, msg: PortOpen) -> None:
        if msg.id is None:
            session.warn(codes.BAD_PAYLOAD, "portopen needs an id: its answer carries the port's ref")
            return
        if msg.device is not None:
            local = self.server.devices.get(msg.device)
            if local is not None:  # the usual case: no task, no lookup
                self._open(session, local, msg.device, msg, describe(msg.device))
                return
            self.server.spawn(self._portopen_found(session, (msg.device,), msg, describe(msg.device)))
            return
        self.server.spawn(self._portopen_by_name(session, msg))

    async def _portopen_by_name(self, session: Session, msg: PortOpen) -> None:
        assert msg.name is not None
        record = await self._lookup(session, PORTOPEN, msg.id, msg.name)
        if record is None or session.closed:
            return
        for device in record.devices:
            local = self.server.devices.get(device)
            if local is not None:
                self._open(session, local, device, msg, f"{msg.name!r} ({describe(device)})")
                return
        await self._portopen_found(
            session, record.devices, msg, f"{msg.name!r} ({describe(record.devices[0])})"
        )

    async def _portopen_found(
        self, session: Session, devices: tuple[bytes, ...], msg: PortOpen, what: str
    ) -> None:
        """Ask the host (this node, then the network) for the first of ``devices`` it can reach."""
        for device in devices:
            try:
                target = await self.server.find_device(device)
            except Exception as exc:
                self.server.count_error(codes.UNAVAILABLE)
                session.error(PORTOPEN, msg.id, codes.UNAVAILABLE, f"cannot look up {what} now: {exc}")
                return
            if target is not None:
                self._open(session, target, device, msg, what)
                return
        self._open(session, None, None, msg, what)

    def _open(
        self, session: Session, target: PortEnd | None, device: bytes | None, msg: PortOpen, what: str
    ) -> None:
        if session.closing or session.device is None:
            return
        self.server.ports.open(session, session.device, target, device, msg, what)

    def _portsend(self, session: Session, msg: PortSend) -> None:
        # The slow path: compressed frames or portsend with an id (the fast one is in Session).
        if msg.ref not in session.ports:
            if msg.id is not None:
                session.error(PORTSEND, msg.id, codes.UNKNOWN_REF, f"ref {msg.ref} is not an open port here")
            else:
                self.server.ports.relay(session, msg.ref, b"")
            return
        header, data = encode_portsend_parts(msg.ref, msg.data)
        frame = header + data
        session.sent_while_paused(msg.ref, len(frame))  # compressed data counts against a pause too
        self.server.ports.relay(session, msg.ref, frame)
        if msg.id is not None:
            session.send(Ack(PORTSEND, msg.id))

    def _portclose(self, session: Session, msg: PortClose) -> None:
        found = self.server.ports.close(session, msg.ref)
        if msg.id is None:
            return  # both sides may close at once: an unknown ref here is not a fault
        if found:
            session.send(Ack(PORTCLOSE, msg.id))
        else:
            session.error(PORTCLOSE, msg.id, codes.UNKNOWN_REF, f"ref {msg.ref} is not an open port here")

    # ---- tickets (SPEC 5) -------------------------------------------------------------------

    async def _ticket(self, session: Session, msg: TicketMsg) -> None:
        account = session.account
        assert account is not None
        server = self.server
        try:
            accepted = await server.desk.submit(account, msg.ticket, server.epoch)
        except TicketTooLowError as exc:
            server.count_error(codes.TOO_LOW)
            session.send(TicketReply(status="too_low", latest=exc.latest, id=msg.id))
            return
        except TicketError as exc:
            server.count_error(exc.code)
            session.error(TICKET, msg.id, exc.code, str(exc))
            return
        except ChrError as exc:
            server.count_error(codes.UNAVAILABLE)
            session.error(TICKET, msg.id, codes.UNAVAILABLE, f"cannot check the ticket now: {exc}")
            return
        except Exception:
            _log.exception("%s: ticket validation failed", session.label())
            server.count_error(codes.INTERNAL_ERROR)
            session.error(TICKET, msg.id, codes.INTERNAL_ERROR, "the node failed to check the ticket; retry")
            return
        server.tickets_accepted += 1
        if server.presence is not None:
            server.presence.device_ticket(account.device, accepted.ticket)
        session.send(TicketReply(status="thanks", paid_bytes=accepted.ticket.total_bytes, id=msg.id))
        session.deadlines.ticket_accepted()
        self.check_usage(session)

    def check_usage(self, session: Session) -> None:
        """Count the session's new bytes; ask for a ticket once usage passes the grace (SPEC 5)."""
        account = session.account
        if account is None or session.closed:
            return
        epoch = self.server.epoch
        session.flush_usage(epoch)
        if account.uncovered(epoch) > self.config.ticket_grace_bytes and session.deadlines.ticket_wanted(
            self.server.loop.time()
        ):
            session.send(TicketRequest(usage=account.usage.get(epoch, 0), epoch=epoch))
        session.next_check(self._check_step())

    def _check_step(self) -> int:
        return max(self.config.ticket_grace_bytes // 4, MIN_CHECK_STEP)

    # ---- lookups ----------------------------------------------------------------------------

    def _getnode(self, session: Session, msg: GetNode) -> None:
        if msg.node == self.server.node_address:
            session.send(GetNodeReply(record=self.server.own_record(), id=msg.id))
            return
        self.server.spawn(self._getnode_remote(session, msg))

    async def _getnode_remote(self, session: Session, msg: GetNode) -> None:
        record = await self._hook(session, GETNODE, msg.id, self.server.hooks.node_record(msg.node))
        if record is None:
            session.error(GETNODE, msg.id, codes.NOT_FOUND, f"node 0x{msg.node.hex()} is not known here")
        elif record is not _FAILED:
            session.send(GetNodeReply(record=record, id=msg.id))

    async def _getobject(self, session: Session, msg: GetObject) -> None:
        obj = await self._hook(session, GETOBJECT, msg.id, self.server.hooks.get_object(msg.key))
        if obj is None:
            session.error(GETOBJECT, msg.id, codes.NOT_FOUND, f"no object with key 0x{msg.key.hex()}")
        elif obj is not _FAILED:
            session.send(GetObjectReply(object=obj, id=msg.id))

    async def _resolve(self, session: Session, msg: Resolve) -> None:
        record = await self._lookup(session, RESOLVE, msg.id, msg.name)
        if record is not None:
            session.send(
                ResolveReply(
                    device=record.devices[0], owner=record.owner, namespace=record.namespace, id=msg.id
                )
            )

    async def _lookup(self, session: Session, msg_type: int, request_id: int | None, name: str) -> Any:
        """The name's record with at least one device, or None after answering the error."""
        try:
            record = await self.server.hooks.resolve_name(name)
        except NameError_ as exc:
            self.server.count_error(codes.BAD_NAME)
            session.error(msg_type, request_id, codes.BAD_NAME, str(exc))
            return None
        except Exception as exc:
            self.server.count_error(codes.UNAVAILABLE)
            session.error(msg_type, request_id, codes.UNAVAILABLE, f"cannot resolve {name!r} now: {exc}")
            return None
        if record is None or not record.devices:
            self.server.count_error(codes.NOT_FOUND)
            session.error(msg_type, request_id, codes.NOT_FOUND, f"name {name!r} is not registered")
            return None
        return record

    async def _hook(
        self, session: Session, msg_type: int, request_id: int | None, call: Coroutine[Any, Any, Any]
    ) -> Any:
        try:
            return await call
        except Exception as exc:
            self.server.count_error(codes.UNAVAILABLE)
            session.error(msg_type, request_id, codes.UNAVAILABLE, f"lookup failed: {exc}")
            return _FAILED


_FAILED: Any = object()
