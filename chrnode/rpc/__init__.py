"""The node's JSON-RPC layer (SPEC 8, 12).

``jsonrpc`` is the pure dispatcher (bytes in, bytes out) over ``wire`` (the error codes, strict
JSON, the response objects); ``api`` the node's methods over a ``NodeView``, ``admin`` its admin
methods over an ``AdminOps``; ``openrpc`` their document; ``server`` the Tornado transport (HTTP,
HTTPS, the admin cookie); ``guard`` its limits under abuse; ``client`` what ``chr-node
status``/``rpc``/``shell`` use to call a running node.
The actor that hosts it is ``actors/rpc_http.py``.
"""
