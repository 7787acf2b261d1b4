"""The node's admin JSON-RPC methods (SPEC 8): restart an actor, set the log level, stop the node.

``admin_methods`` gives the three methods (all ``admin=True``: the dispatcher refuses them without
the admin token). Each calls an ``AdminOps`` given by the RPC actor; they are async because the
answer comes back from another actor. A ``ChrError`` from an operation is sent as -32003 with what
failed; an ``RpcError`` is sent as is. ``admin_restart_actor`` checks the name against the actor
tree of the snapshot first (``chrnode.rpc.api.NodeView`` is a ``SnapshotSource``).

``chrnode.rpc.api`` puts these methods into the node's method table (``build_methods``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from chrnode.errors import ChrError, RpcError
from chrnode.rpc.jsonrpc import Method, Param
from chrnode.rpc.wire import ACTOR_FAILED, INVALID_PARAMS

log = logging.getLogger("chrnode.rpc")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class AdminOps(Protocol):
    """What the RPC actor does for admin methods. Each may raise RpcError (sent as is) or
    ChrError (sent as -32003 with its message)."""

    async def restart_actor(self, name: str) -> None: ...

    async def set_log_level(self, level: str) -> None: ...

    async def stop(self) -> None: ...


class SnapshotSource(Protocol):
    """Where the admin methods read the node's current snapshot (the actor tree) from."""

    @property
    def snapshot(self) -> Mapping[str, Any]: ...


def _tree_names(snapshot: Mapping[str, Any]) -> list[str]:
    tree = snapshot.get("tree")
    rows = tree if isinstance(tree, list | tuple) else ()
    return [str(r["name"]) for r in rows if isinstance(r, Mapping) and "name" in r]


async def _admin_call(what: str, operation: Awaitable[None]) -> None:
    try:
        await operation
    except RpcError:
        raise
    except ChrError as exc:  # e.g. ActorError from the bridge: say what failed, not a traceback
        raise RpcError(ACTOR_FAILED, f"{what}: {exc}") from exc


def admin_methods(view: SnapshotSource, admin: AdminOps) -> list[Method]:
    """admin_restart_actor, admin_set_log_level and admin_stop, in that order."""

    async def admin_restart_actor(name: str) -> dict[str, Any]:
        known = _tree_names(view.snapshot)
        if name not in known:
            raise RpcError(
                INVALID_PARAMS,
                f"invalid params: no actor named {name[:100]!r}; see chr_node_info for the tree",
                {"param": "name", "expected": "an actor name", "known": known},
            )
        await _admin_call(f"could not restart {name}", admin.restart_actor(name))
        log.warning("admin: actor %s restarted on request", name)
        return {"restarted": name}

    async def admin_set_log_level(level: str) -> dict[str, Any]:
        normalized = level.upper()
        if normalized not in LOG_LEVELS:
            raise RpcError(
                INVALID_PARAMS,
                f"invalid params: log level {level[:40]!r} is not one of {', '.join(LOG_LEVELS)}",
                {"param": "level", "expected": "one of " + ", ".join(LOG_LEVELS), "got": level[:40]},
            )
        await _admin_call("could not set the log level", admin.set_log_level(normalized))
        log.warning("admin: log level set to %s", normalized)
        return {"log_level": normalized}

    async def admin_stop() -> dict[str, Any]:
        await _admin_call("could not stop the node", admin.stop())
        log.warning("admin: stop requested over JSON-RPC")
        return {"stopping": True}

    obj = {"type": "object"}
    return [
        Method(
            "admin_restart_actor",
            admin_restart_actor,
            admin=True,
            params=(Param("name", "string", True, "actor name as shown in chr_node_info's tree"),),
            summary="Restart one actor as if it had crashed",
            result="{restarted: name}",
            result_schema=obj,
        ),
        Method(
            "admin_set_log_level",
            admin_set_log_level,
            admin=True,
            params=(Param("level", "string", True, "one of " + ", ".join(LOG_LEVELS) + " (any case)"),),
            summary="Change the log level of every actor",
            result="{log_level}",
            result_schema=obj,
        ),
        Method(
            "admin_stop",
            admin_stop,
            admin=True,
            summary="Stop the node (answers first, then stops)",
            result="{stopping: true}",
            result_schema=obj,
        ),
    ]
