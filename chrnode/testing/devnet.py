"""Prepare a node for a development chain that runs elsewhere (compose.yaml's `chain` service).

    python -m chrnode.testing.devnet      # then: chr-node start

What tools/devchain does after starting anvil itself, for a chain it cannot start: wait for the
first endpoint of `chain_rpc` to answer, deploy whatever of the project's contracts is missing
(with anvil's public development key), write `<data_dir>/contracts.json` (which the node reads
where no `*_contract` key is set) and put this node in the fleet's node allowlist. It reads the
node's configuration as `chr-node start` does (CHR_CHAIN_RPC, CHR_DATA_DIR, ...). Idempotent.
Exit codes: 0 ready, 1 the chain did not answer or a deployment failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from chrnode.chain import hexcodec as hx
from chrnode.chain.contracts import Fleet
from chrnode.chain.deploy import Deployment, ensure_deployed
from chrnode.chain.rpc import RemoteRpc
from chrnode.config import load, resolve_config_path
from chrnode.errors import ChainError, ChrError

log = logging.getLogger("chrnode.devnet")


def wait_for_chain(rpc: RemoteRpc, timeout: float) -> int:
    """The chain id, once the endpoint answers (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return rpc.chain_id()
        except ChainError as exc:
            if time.monotonic() >= deadline:
                raise ChainError(
                    f"the chain at {rpc.endpoints[0]} did not answer within {timeout:g} s"
                ) from exc
            time.sleep(0.5)


def prepare(env: Mapping[str, str], wait: float) -> Deployment:
    from chrnode.daemon import prepare_identity
    from chrnode.testing.anvil import DEPLOYER

    cfg = load(env, resolve_config_path(None, env)).config
    node = hx.address_bytes(prepare_identity(cfg))
    path = Path(cfg.contracts_path)
    with RemoteRpc(cfg.chain_rpc[:1], cfg.chain_id, timeout=cfg.chain_timeout) as rpc:
        wait_for_chain(rpc, wait)
        existing = Deployment.load(path) if path.is_file() else None
        deployment = ensure_deployed(
            rpc, DEPLOYER, existing, epoch_length=cfg.epoch_length, progress=log.info
        )
        if deployment != existing:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(deployment.to_json(), encoding="utf-8")
            os.replace(tmp, path)
            log.info("wrote %s", path)
        fleet = Fleet(rpc, deployment.fleet)
        if not fleet.node_allowed(node):
            fleet.set_node_allowed(DEPLOYER, node, True)
            log.info("node %s added to the fleet allowlist", hx.hex_address(node))
    return deployment


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the chain")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="devnet: %(message)s")
    try:
        deployment = prepare(dict(os.environ if env is None else env), args.wait)
    except ChrError as exc:
        log.error("%s", exc)
        return 1
    log.info("ready: chain %d, fleet %s", deployment.chain_id, deployment.fleet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
