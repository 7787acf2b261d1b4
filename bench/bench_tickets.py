"""Ticket verifications per second (SPEC 5), against eth-keys in the same run.

    .venv/bin/python bench/bench_tickets.py [-n 20000]

Signs one ticket, then verifies it N times through
  - chrnode: Ticket.recover() (digest + ecrecover) and TicketValidator.validate() (steps 1-6,
    default hooks); TicketDesk.submit() (the edge port's desk: the same steps once each, with
    in-memory async hooks awaited in between; it recovers the signature once, as validate does,
    so its rate should be close to validate's, where running the validator twice, as the desk
    once did, would halve it);
  - baseline: eth_abi.encode + keccak + eth_keys recover_public_key_from_msg_hash, i.e. what a
    straightforward implementation with the Ethereum libraries does;
  - baseline: eth_keys recovery alone over a precomputed digest (the floor of any implementation).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import eth_abi
from eth_keys import KeyAPI
from eth_keys import keys as eth_keys

from chrnode.crypto import PrivateKey, keccak256
from chrnode.edge.hooks import DefaultHooks
from chrnode.edge.usage import DeviceAccount, TicketDesk
from chrnode.ticket import Ticket, TicketValidator

ABI_TYPES = ["uint256", "uint256", "address", "address", "uint256", "uint256", "bytes32"]


def rate(fn: Callable[[], object], n: int) -> float:
    fn()  # warm up
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=20_000, help="verifications per measurement")
    n = parser.parse_args().n

    node, device = PrivateKey.generate(), PrivateKey.generate()
    ticket = Ticket(
        chain_id=31337,
        epoch=689,
        node=node.address,
        fleet=bytes(20),
        total_connections=5,
        total_bytes=123_456_789,
        local_address=b"device-local",
    ).sign(device)
    validator = TicketValidator(node.address, 31337)
    signature = eth_keys.Signature(ticket.signature)
    digest = ticket.ticket_digest()

    def chrnode_validate() -> object:
        return validator.validate(ticket, device.address, 689, None)

    def eth_full() -> object:
        values = [
            ticket.chain_id, ticket.epoch, ticket.node, ticket.fleet,
            ticket.total_connections, ticket.total_bytes, keccak256(ticket.local_address),
        ]  # fmt: skip
        h = keccak256(eth_abi.encode(ABI_TYPES, values))
        return eth_keys.Signature(ticket.signature).recover_public_key_from_msg_hash(h).to_canonical_address()

    def eth_recover_only() -> object:
        return signature.recover_public_key_from_msg_hash(digest).to_canonical_address()

    desk = TicketDesk(node.address, 31337, DefaultHooks(epoch=689), 16 * 1024**3)
    account = DeviceAccount(device.address)

    def desk_rate() -> float:
        async def run() -> float:
            await desk.submit(account, ticket, 689)  # warm up (loads the stored ticket once)
            start = time.perf_counter()
            for _ in range(n):
                await desk.submit(account, ticket, 689)  # a resend is not lower: accepted each time
            return n / (time.perf_counter() - start)

        return asyncio.run(run())

    assert ticket.recover() == device.address == eth_full() == eth_recover_only()
    results = {
        "chrnode Ticket.recover": rate(ticket.recover, n),
        "chrnode TicketValidator.validate": rate(chrnode_validate, n),
        "chrnode TicketDesk.submit": desk_rate(),
        "baseline eth_abi + eth_keys recover": rate(eth_full, n),
        "baseline eth_keys recover only": rate(eth_recover_only, n),
    }
    base = results["baseline eth_abi + eth_keys recover"]
    backend = type(KeyAPI().backend).__name__
    print(f"ticket verifications per second, n={n} (eth_keys backend: {backend})")
    for name, value in results.items():
        print(f"  {name:40s} {value:10,.0f}/s  {value / base:5.2f}x baseline")


if __name__ == "__main__":
    main()
