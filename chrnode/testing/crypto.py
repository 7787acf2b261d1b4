"""Test helpers for keys, tickets and TLS (shared by tests and tools; not used by the node)."""

from __future__ import annotations

import ssl
from pathlib import Path

from chrnode.crypto import PrivateKey
from chrnode.identity import edge_client_context, edge_server_context, ensure_node_certificate
from chrnode.ticket import Ticket

DEFAULT_FLEET = bytes.fromhex("6000000000000000000000000000000000000006")


def signed_ticket(
    device: PrivateKey,
    node: bytes,
    *,
    chain_id: int = 31337,
    epoch: int = 0,
    fleet: bytes = DEFAULT_FLEET,
    total_connections: int = 1,
    total_bytes: int = 0,
    local_address: bytes = b"",
    payment_proof: bytes = b"",
) -> Ticket:
    """A ticket for ``node`` signed by ``device`` (defaults: anvil's chain id 31337, epoch 0)."""
    ticket = Ticket(
        chain_id=chain_id,
        epoch=epoch,
        node=node,
        fleet=fleet,
        total_connections=total_connections,
        total_bytes=total_bytes,
        local_address=local_address,
        payment_proof=payment_proof,
    )
    return ticket.sign(device)


def edge_contexts(key: PrivateKey, directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) EdgeV2 contexts for ``key``, its certificate files written to ``directory``."""
    cert_path, key_path = ensure_node_certificate(key, directory)
    return edge_server_context(key_path, cert_path), edge_client_context()


def memory_handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, max_steps: int = 20
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Handshake a server and a client through memory BIOs; returns (server, client) SSLObjects."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    pending = {id(client): client, id(server): server}
    for _ in range(max_steps):
        for key, obj in list(pending.items()):
            try:
                obj.do_handshake()
                del pending[key]
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if not pending:
            return server, client
    raise RuntimeError(f"in-memory TLS handshake did not finish in {max_steps} steps")
