"""The OpenRPC 1.2.6 document of the node's JSON-RPC API (SPEC 8: ``rpc.discover``).

Generated from the same Method table the dispatcher routes with, so the document cannot drift
from what the node serves. Admin methods carry the extension field ``x-admin: true`` and document
the -32001 error; every method documents the standard errors it can return.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chrnode.rpc.jsonrpc import Method, Param
from chrnode.rpc.wire import INVALID_PARAMS, TIMED_OUT, UNAUTHORIZED

OPENRPC_VERSION = "1.2.6"


def _schema(param: Param) -> dict[str, Any]:
    # "any" is our own shorthand; in JSON Schema it is the empty schema.
    if param.type == "any":
        return {}
    if param.type == "integer":
        low, high = param.bounds()
        return {"type": "integer", "minimum": low, "maximum": high}
    return {"type": param.type}


def method_object(method: Method) -> dict[str, Any]:
    """One OpenRPC Method Object."""
    errors: list[dict[str, Any]] = []
    if method.params:
        errors.append(
            {"code": INVALID_PARAMS, "message": "invalid params: a param is missing or of the wrong type"}
        )
    if method.admin:
        errors.append({"code": UNAUTHORIZED, "message": "unauthorized: admin token required"})
        errors.append({"code": TIMED_OUT, "message": "the actor did not answer in time"})
    doc: dict[str, Any] = {
        "name": method.name,
        "summary": method.summary or method.name,
        "paramStructure": "either",
        "params": [
            {
                "name": p.name,
                "required": p.required,
                "description": p.description,
                "schema": _schema(p),
            }
            for p in method.params
        ],
        "result": {
            "name": f"{method.name}_result",
            "description": method.result,
            "schema": dict(method.result_schema),
        },
    }
    if errors:
        doc["errors"] = errors
    if method.admin:
        doc["x-admin"] = True
    return doc


def openrpc_document(
    methods: Iterable[Method], *, title: str = "chr-node JSON-RPC", version: str
) -> dict[str, Any]:
    """The whole document, methods sorted by name so it is stable across runs."""
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "Node status, peers, fleet, rewards, health and admin operations of a chr-node. "
            "Admin methods need the token from <data_dir>/.cookie "
            "(Authorization: Bearer <token>, or basic auth as __cookie__).",
        },
        "methods": [method_object(m) for m in sorted(methods, key=lambda m: m.name)],
    }
