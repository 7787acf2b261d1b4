"""A real local chain for tests and tools: anvil from ./node_modules (SPEC 7).

    from chrnode.testing.anvil import anvil_session, skip_or_fail_without_anvil

    @pytest.fixture(scope="session")
    def devchain():
        skip_or_fail_without_anvil()        # skips locally, FAILS in CI (CI=true) without `npm ci`
        with anvil_session() as chain:      # anvil on a free port, the four contracts deployed
            yield chain                     # chain.rpc_url, chain.rpc, chain.contracts, chain.anvil

    @pytest.fixture
    def clean_chain(devchain):               # each test sees the freshly deployed state
        snap = devchain.snapshot()
        yield devchain
        devchain.revert(snap)

Anvil listens on 127.0.0.1 port 0 (it prints the port it got, which `start()` reads with a
bounded wait). Accounts come from the well-known test mnemonic, so DEV_KEYS[i] signs for
DEV_ADDRESSES[i]; anvil keeps them unlocked for eth_sendTransaction. `stop()` leaves no process
behind, and the child also dies with the test process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from chrnode.chain import hexcodec as hx
from chrnode.chain.deploy import DEFAULT_EPOCH_LENGTH, Deployment, ensure_deployed
from chrnode.chain.rpc import RemoteRpc
from chrnode.chain.tx import KeySigner, UnlockedAccount

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_BIN = REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
DEV_CHAIN_ID = 31337
DEV_MNEMONIC = "test test test test test test test test test test test junk"
# The first accounts of DEV_MNEMONIC (m/44'/60'/0'/0/i): public test keys, never hold value.
DEV_KEYS = tuple(
    bytes.fromhex(k)
    for k in (
        "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
        "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    )
)
DEV_ADDRESSES = tuple(KeySigner(k).address for k in DEV_KEYS)
DEPLOYER = UnlockedAccount(DEV_ADDRESSES[0])

_LISTENING_RE = re.compile(rb"Listening on ([0-9.]+):(\d+)")
_PR_SET_PDEATHSIG = 1


class AnvilError(RuntimeError):
    """anvil is missing, did not start in time, or exited."""


def anvil_available() -> bool:
    return os.access(ANVIL_BIN, os.X_OK)


def skip_or_fail_without_anvil() -> None:
    """Skip the calling test when anvil is not installed; in CI (env CI=true) fail instead, so a
    CI run without `npm ci` cannot pass by skipping every chain test."""
    import pytest

    if anvil_available():
        return
    message = f"anvil not found at {ANVIL_BIN}: run `npm ci` in {REPO_ROOT}"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class AnvilProcess:
    """One anvil process. `start()` returns its URL; `stop()` ends it (and waits for it)."""

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        chain_id: int = DEV_CHAIN_ID,
        state_path: Path | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        die_with_parent: bool = True,
        binary: Path = ANVIL_BIN,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.chain_id = chain_id
        self.state_path = state_path
        self.log_path = log_path
        self.extra_args = tuple(extra_args)
        self.die_with_parent = die_with_parent
        self.binary = binary
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._own_log = False

    @property
    def rpc_url(self) -> str:
        if self.port is None:
            raise AnvilError("anvil is not started")
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [str(self.binary), "--host", self.host, "--port", str(self.requested_port)]
        cmd += ["--chain-id", str(self.chain_id), "--mnemonic", DEV_MNEMONIC, "--accounts", "10"]
        if self.state_path is not None:
            cmd += ["--state", str(self.state_path)]
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 30.0) -> str:
        if not os.access(self.binary, os.X_OK):
            raise AnvilError(f"anvil not found at {self.binary}: run `npm ci` in {REPO_ROOT}")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="anvil-", suffix=".log")
            os.close(fd)
            self.log_path, self._own_log = Path(name), True
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
            start_new_session=not self.die_with_parent,
        )
        try:
            self.port = self._wait_listening(timeout)
        except BaseException:
            self.stop()
            raise
        return self.rpc_url

    def _wait_listening(self, timeout: float) -> int:
        assert self.process is not None and self.log_path is not None
        deadline = time.monotonic() + timeout
        while True:
            found = _LISTENING_RE.search(self.log_path.read_bytes())
            if found:
                return int(found.group(2))
            if self.process.poll() is not None:
                raise AnvilError(f"anvil exited with {self.process.returncode}: {self.output()[-2000:]}")
            if time.monotonic() > deadline:
                raise AnvilError(f"anvil did not report its port within {timeout} s: {self.output()[-2000:]}")
            time.sleep(0.02)

    def output(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (anvil writes its --state file then), SIGKILL after `timeout`; always reaped."""
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path, self._own_log = None, False
        self.port = None

    def rpc(self, timeout: float = 10.0) -> RemoteRpc:
        return RemoteRpc([self.rpc_url], self.chain_id, timeout=timeout)

    def __enter__(self) -> AnvilProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def snapshot(rpc: RemoteRpc) -> str:
    """evm_snapshot: an id to revert to. Anvil forgets the snapshot once reverted to."""
    snap = rpc.call("evm_snapshot")
    if not isinstance(snap, str):
        raise AnvilError(f"evm_snapshot returned {snap!r}; expected a hex id")
    return snap


def revert(rpc: RemoteRpc, snapshot_id: str) -> None:
    if rpc.call("evm_revert", [snapshot_id]) is not True:
        raise AnvilError(f"evm_revert({snapshot_id}) failed: unknown snapshot")


def deploy_all(
    rpc_url: str, chain_id: int = DEV_CHAIN_ID, epoch_length: int = DEFAULT_EPOCH_LENGTH
) -> dict[str, Any]:
    """Deploy the four contracts with the dev account.

    Returns {chain_id, bns, fleet, chai, ticket_registry, deployer} (0x-hex addresses)."""
    with RemoteRpc([rpc_url], chain_id, timeout=10.0) as rpc:
        return dataclasses.asdict(ensure_deployed(rpc, DEPLOYER, epoch_length=epoch_length))


@dataclass
class DevChain:
    """A running anvil with the contracts deployed."""

    anvil: AnvilProcess
    rpc: RemoteRpc
    contracts: dict[str, Any] = field(default_factory=dict)

    @property
    def rpc_url(self) -> str:
        return self.anvil.rpc_url

    @property
    def deployment(self) -> Deployment:
        return Deployment.from_mapping(self.contracts, "deploy_all")

    def address(self, role: str) -> bytes:
        return hx.address_bytes(self.contracts[role])

    def snapshot(self) -> str:
        return snapshot(self.rpc)

    def revert(self, snapshot_id: str) -> None:
        revert(self.rpc, snapshot_id)

    def fund(self, address: bytes, wei: int = 10**20) -> None:
        self.rpc.call("anvil_setBalance", [hx.hex_address(address), hx.hex_quantity(wei)])

    def block_timestamp(self) -> int:
        return hx.parse_quantity(self.rpc.get_block("latest")["timestamp"], "block timestamp")


@contextlib.contextmanager
def anvil_session(deploy: bool = True, chain_id: int = DEV_CHAIN_ID, **anvil_args: Any) -> Iterator[DevChain]:
    """Start anvil (and deploy the contracts); stop it on exit whatever happened."""
    anvil = AnvilProcess(chain_id=chain_id, **anvil_args)
    anvil.start()
    try:
        rpc = anvil.rpc()
        contracts = deploy_all(anvil.rpc_url, chain_id) if deploy else {}
        with rpc:
            yield DevChain(anvil, rpc, contracts)
    finally:
        anvil.stop()
