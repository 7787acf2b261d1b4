"""`chr-node start`: prepare the data dir, start the actor tree, run until told to stop.

Everything that can be checked before an actor exists is checked here, so a bad key file, an
unwritable data dir or a taken port stops start-up with one clear line instead of a restart loop.
SIGTERM and SIGINT stop the tree in reverse order and shut Thespian down: no process is left.
At start the soft descriptor limit is raised to the hard one (or set to max_open_files), so every
actor process inherits it; ``.cookie`` is written anew at every start and removed at a clean stop,
as bitcoind does, so a stale token never outlives the node.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from chrnode import __version__, held_ports
from chrnode.actorsys import bind_error, shutdown_system, start_system_on
from chrnode.config import Config, validate_data_dir
from chrnode.errors import ActorError, ChrError, ConfigError
from chrnode.fdlimit import raise_nofile_limit
from chrnode.heartbeat import Heartbeat, RootPinger
from chrnode.logsink import LOG_FORMAT, LocalHandler, LogSink
from chrnode.ports_file import ports_path, read_ports, remove_ports
from chrnode.procwatch import (
    ADMIN,
    LOGGER,
    Death,
    RebuildBudget,
    SystemWatch,
    become_subreaper,
    live_descendants,
    reap,
)
from chrnode.procwatch import ROOT as ROOT_ROLE
from chrnode.rpc.server import write_cookie

log = logging.getLogger("chrnode.daemon")

START_TIMEOUT = timedelta(seconds=120)
PORTS_FILE_TIMEOUT = 15.0  # after TreeReady, for Globals to hear from every listener


def hold_ports(cfg: Config) -> Config:
    """Bind every listening port once, for the node's lifetime (chrnode.held_ports: a restarted
    listener takes the held socket, so its port never goes free while the node runs); refuse to
    start when one is taken, naming the key and the port. Returns `cfg` with the bound ports (a
    port configured 0 is the one the OS picked), which is what the tree is started with."""
    from tornado.netutil import bind_sockets

    def tornado_binder(host: str, port: int) -> list[Any]:
        return list(bind_sockets(port, address=host))

    def bound(key: str, host: str, port: int, binder: held_ports.Binder = held_ports.tcp_listener) -> int:
        try:
            return held_ports.hold(host, port, binder)
        except OSError as error:
            held_ports.release_all()
            raise ConfigError(
                key, port, "the running system", f"a free port ({host}:{port}: {error.strerror})"
            ) from error

    return dataclasses.replace(
        cfg,
        rpc_port=bound("rpc_port", cfg.rpc_bind, cfg.rpc_port, tornado_binder),
        rpcs_port=bound("rpcs_port", cfg.rpc_bind, cfg.rpcs_port, tornado_binder),
        peer2_port=bound("peer2_port", cfg.bind_address, cfg.peer2_port),
        edge2_ports=tuple(bound("edge2_ports", cfg.bind_address, p) for p in cfg.edge2_ports),
    )


def rpcs_cert_paths(cfg: Config) -> tuple[Path, Path]:
    """The HTTPS RPC certificate: the operator's, or a self-signed P-256 one made on first start."""
    from chrnode.identity import ensure_rpc_certificate

    if cfg.rpcs_cert_path is not None and cfg.rpcs_key_path is not None:
        return cfg.rpcs_cert_path, cfg.rpcs_key_path
    return ensure_rpc_certificate(Path(cfg.data_dir))


def prepare_identity(cfg: Config) -> str:
    """Data dir, node key and certificates (made on first use); returns the node's 0x address."""
    from chrnode.identity import load_node_identity

    validate_data_dir(cfg.data_dir)
    identity = load_node_identity(Path(cfg.data_dir), cfg.node_key_path)
    rpcs_cert_paths(cfg)
    return identity.key.hex_address


def prepare(cfg: Config) -> str:
    """What `start` needs before any actor exists: the identity and a new admin cookie."""
    address = prepare_identity(cfg)
    write_cookie(Path(cfg.cookie_path))  # a new admin token on every start, mode 0600
    return address


def set_descriptor_limit(cfg: Config) -> None:
    """Raise the soft RLIMIT_NOFILE before any actor is forked (they inherit it); log it."""
    try:
        old, new, hard = raise_nofile_limit(cfg.max_open_files)
    except (OSError, ValueError) as exc:
        log.warning("cannot set the open-files limit to %s: %s", cfg.max_open_files or "the hard limit", exc)
        return
    if new != old:
        log.info("open-files limit raised from %d to %d (hard limit %d)", old, new, hard)
    else:
        log.info("open-files limit is %d (hard limit %d)", new, hard)


def remove_cookie(cfg: Config) -> None:
    """At a clean stop: the token dies with the node that made it."""
    try:
        Path(cfg.cookie_path).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove the admin cookie: %s", exc)


def setup_logging(cfg: Config) -> None:
    """Log to stderr; the file in the data dir is added once the data dir is known to be usable."""
    root = logging.getLogger()
    root.setLevel(getattr(logging, cfg.log_level.upper()))
    root.handlers.clear()
    stderr = logging.StreamHandler()
    stderr.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(stderr)


def start_log_sink(cfg: Config) -> LogSink:
    """From here on the daemon is the one writer of stderr and the log file, for every process
    of the node (chrnode.logsink)."""
    sink = LogSink(cfg.log_path).start()
    logging.getLogger().handlers = [LocalHandler(sink.writer)]
    return sink


class Daemon:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stop_reason = ""
        self.asys: Any = None
        self.root: Any = None
        self.watch: SystemWatch | None = None
        self.budget = RebuildBudget(cfg.max_rebuilds, cfg.rebuild_window)
        self.heartbeat = Heartbeat()
        self.pinger: RootPinger | None = None
        self.sink: LogSink | None = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_reason = signal.Signals(signum).name

    def run(self) -> int:
        cfg = self.cfg
        setup_logging(cfg)
        set_descriptor_limit(cfg)
        try:
            address = prepare(cfg)
            self.sink = start_log_sink(cfg)
            cfg = self.cfg = hold_ports(cfg)
        except (ChrError, OSError) as exc:
            log.error("cannot start: %s", exc)
            remove_cookie(cfg)
            return self._close_sink(2)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        # Thespian's admin detaches itself; as subreaper the daemon adopts it (and any orphan),
        # reaps it and learns how it died (chrnode.procwatch).
        become_subreaper()
        log.info("chr-node %s starting: node %s, data dir %s", __version__, address, cfg.data_dir)
        remove_ports(cfg.data_dir)  # left by a node that was killed: stale
        try:
            failure = self._start_tree()
            if failure:
                log.error("cannot start: %s", failure)
                remove_cookie(cfg)
                code = failure_code(failure)
            else:
                code = self._wait()
        finally:
            self._stop()
        return self._close_sink(code)

    def _close_sink(self, code: int) -> int:
        if self.sink is not None:
            sink, self.sink = self.sink, None
            setup_logging(self.cfg)
            sink.stop()
        return code

    def _start_tree(self) -> str:
        """Start the actor system and the tree; '' when whole, else why not."""
        from actors import messages as m
        from actors.supervisor import Supervisor
        from actors.tree import ROOT, node_tree

        cfg = self.cfg
        started = time.monotonic()
        preload_actor_modules(node_tree())
        try:
            self.asys, admin_port = start_system_on(cfg.actor_admin_port, cfg.log_level, None)
        except ActorError as exc:
            return f"{exc} [system]"
        # The actors (Globals reports it in chr_node_info and the ports file) see the bound port;
        # a rebuild binds the same one again.
        cfg = self.cfg = dataclasses.replace(cfg, actor_admin_port=admin_port)
        # A global name lets tools on this machine find the root (and the registry) again.
        self.root = self.asys.createActor(Supervisor, globalName=ROOT)
        reply = self.asys.ask(self.root, m.StartTree(node_tree(), cfg, os.getpid()), START_TIMEOUT)
        if not isinstance(reply, m.TreeReady):
            return reply.reason if isinstance(reply, m.TreeFailed) else "no answer from the actor tree"
        pong = self.asys.ask(self.root, m.Ping(), timedelta(seconds=10))
        try:
            self.watch = SystemWatch.of_root(pong.pid) if isinstance(pong, m.Pong) else None
        except psutil.Error:
            self.watch = None
        if self.watch is None:
            return "the root supervisor died as the tree became ready"
        self.heartbeat.start(time.monotonic())
        try:
            self.pinger = RootPinger(cfg.actor_admin_port, self.root, self.heartbeat).start()
        except Exception as exc:  # Thespian raises bare exceptions when its admin is unreachable
            return f"cannot reach the actor system's admin to watch the root: {exc}"
        ports = self._wait_for_ports()
        log.info(
            "chr-node ready in %.1f s: %d actors; JSON-RPC on %s:%s (http) and %s (https); devices on %s; "
            "ports in %s; root supervisor pid %d, Thespian admin pid %d, logger pid %s",
            time.monotonic() - started,
            len(reply.names),
            cfg.rpc_bind,
            ports.get("rpc", cfg.rpc_port),
            ports.get("rpcs", cfg.rpcs_port),
            ports.get("edge2", list(cfg.edge2_ports)),
            ports_path(cfg.data_dir),
            self.watch.pids.get(ROOT_ROLE, 0),
            self.watch.pids.get(ADMIN, 0),
            self.watch.pids.get(LOGGER, "none"),
        )
        return ""

    def _wait_for_ports(self) -> dict[str, Any]:
        """The ports file Globals writes once every listener reported (bounded wait)."""
        deadline = time.monotonic() + PORTS_FILE_TIMEOUT
        while time.monotonic() < deadline and not self.stop_reason:
            try:
                ports = read_ports(self.cfg.data_dir)
            except ChrError:
                ports = None
            if ports is not None:
                return ports
            time.sleep(0.05)
        log.warning("the ports file was not written within %.0f s; see chr_node_info", PORTS_FILE_TIMEOUT)
        return {}

    def _wait(self) -> int:
        from actors import messages as m

        while not self.stop_reason:
            msg = self.asys.listen(timedelta(seconds=0.25))
            if isinstance(msg, m.StopNode):
                self.stop_reason = msg.reason
            elif isinstance(msg, m.TreeFailed):
                log.error("the supervision tree gave up: %s; exiting", msg.reason)
                return 1
            if self.watch is None:
                continue
            now = time.monotonic()
            self.watch.note_reaped(reap())
            deaths = self.watch.poll() or self.watch.stopped(now)
            if not deaths and self.heartbeat.overdue(now):
                deaths = self.watch.hung(self.heartbeat.timeout)
            if deaths and not self._recover(deaths):
                return 1
        log.info("stopping (%s)", self.stop_reason)
        return 0

    def _recover(self, deaths: list[Death]) -> bool:
        """A process the tree stands on died: the logger alone is replaced by the admin; anything
        else means a new actor system. False: the daemon gives up (and exits non-zero)."""
        for death in deaths:
            log.error("%s (pid %d) %s", death.role, death.pid, death.how)
        if [d.role for d in deaths] == [LOGGER] and self._logger_replaced():
            return True
        if self.stop_reason:
            return True  # stopping anyway
        if not self.budget.allow(time.monotonic()):
            log.error(
                "giving up: the actor system was rebuilt %d times within %g s; exiting with status 1",
                self.budget.max_rebuilds,
                self.budget.window,
            )
            return False
        log.error(
            "rebuilding the actor system (%d of at most %d within %g s)",
            len(self.budget.times),
            self.budget.max_rebuilds,
            self.budget.window,
        )
        started = time.monotonic()
        self._teardown()
        failure = self._start_tree()
        if failure:
            log.error("could not rebuild the actor system: %s; exiting with status 1", failure)
            return False
        log.warning("actor system rebuilt in %.2f s", time.monotonic() - started)
        return True

    def _logger_replaced(self) -> bool:
        """Thespian's admin starts a new logger when its logger dies (chrnode.forkhooks mends
        Thespian 4.0.1 there); give it a second to appear."""
        assert self.watch is not None
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            self.watch.note_reaped(reap())
            pid = self.watch.adopt_logger()
            if pid is not None:
                log.warning("Thespian's admin started a new logger (pid %d); the tree is whole", pid)
                return True
            time.sleep(0.05)
        log.error("no new logger appeared within 1 s")
        return False

    def _stop_pinger(self) -> None:
        if self.pinger is not None:
            pinger, self.pinger = self.pinger, None
            pinger.stop()

    def _teardown(self) -> None:
        """Shut down what is left of a broken actor system, and wait until every process of it
        is gone (their ports free: a listener still dying would refuse its successor's bind)."""
        self._stop_pinger()
        admin = self.watch.watched.get(ADMIN) if self.watch is not None else None
        self.watch = None
        self.root = None
        if self.asys is not None:
            asys, self.asys = self.asys, None
            shutdown_system(asys)
        if admin is not None:
            # It has confirmed the shutdown but lingers for a while holding the admin port;
            # what is left under it dies with it (PR_SET_PDEATHSIG).
            admin.end(grace=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            reap()
            # As subreaper the daemon is the ancestor of every process of the old tree, orphans
            # included; each dies with its parent (PR_SET_PDEATHSIG), which takes a moment.
            if not live_descendants() and bind_error("127.0.0.1", self.cfg.actor_admin_port) is None:
                break
            time.sleep(0.02)
        reap()

    def _stop(self) -> None:
        from actors import messages as m

        self._stop_pinger()
        if self.asys is None:
            return
        try:
            if self.root is not None and (self.watch is None or ROOT_ROLE in self.watch.pids):
                self.asys.ask(self.root, m.StopTree(), timedelta(seconds=20))
        finally:
            asys, self.asys = self.asys, None
            shutdown_system(asys)
            reap()
            held_ports.release_all()  # every process that shared them is gone
            remove_cookie(self.cfg)
            remove_ports(self.cfg.data_dir)
        log.info("stopped")


def preload_actor_modules(spec: Any) -> None:
    """Import every actor module of the tree in the daemon, before the first fork.

    Each process of the node is a fork of the daemon (through the admin and the supervisors), so
    what the daemon imported is one copy of shared pages for all of them, counted once in the
    node's PSS; a module an actor imports for itself is a private copy in that actor. Measured
    with bench/bench_memory.py (idle node, 21 processes): importing in each actor, 261 MiB PSS;
    importing here, about 198 MiB. `gc.freeze()` before each fork (chrnode.actorsys) keeps the
    collector from writing to those shared pages.
    """
    import importlib

    importlib.import_module(spec.actor.partition(":")[0])
    for child in spec.children:
        preload_actor_modules(child)
    for module in RUNTIME_IMPORTS:
        importlib.import_module(module)


# Modules the actors import only when they run (Tornado picks its asyncio loop lazily; requests
# imports netrc, and netrc shlex, on its first request: 0.7 MiB in RemoteChain.Monitor): imported
# before the first fork too, so no (re)started actor pays for them or holds its own copy.
RUNTIME_IMPORTS = ("tornado.platform.asyncio", "encodings.ascii", "netrc", "shlex")


def failure_code(reason: str) -> int:
    """Exit status for a failed start: 2 when the actor system itself could not start."""
    return 2 if reason.endswith("[system]") else 1
