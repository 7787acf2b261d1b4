"""`chr-node shell`: an interactive admin shell on the running node.

Commands map onto JSON-RPC methods; `call METHOD [PARAMS...]` reaches any of them. Tab completes
commands, every method the node lists in `rpc.discover`, actor names for `restart` and levels for
`loglevel`. History is kept in the data dir between sessions.
"""

from __future__ import annotations

import cmd
import json
import shlex
from pathlib import Path
from typing import Any, TextIO

from chrnode.errors import ChrError
from chrnode.rpc.client import RpcClient, format_status, parse_params

LEVELS = ("debug", "info", "warning", "error")


class AdminShell(cmd.Cmd):
    intro = "chr-node admin shell. Type help or ? to list commands, Tab to complete, Ctrl-D to leave."
    prompt = "chr-node> "

    def __init__(
        self,
        client: RpcClient,
        history_file: Path | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        super().__init__(stdin=stdin, stdout=stdout)
        if stdin is not None:
            self.use_rawinput = False
        self.client = client
        self.history_file = history_file
        self.methods: list[str] = []
        self.actors: list[str] = []

    # -- running -----------------------------------------------------------------------------

    def run(self) -> None:
        self._refresh_names()
        readline = _readline()
        if readline is not None and self.history_file is not None:
            try:
                readline.read_history_file(str(self.history_file))
            except OSError:
                pass
            readline.set_history_length(1000)
        try:
            self.cmdloop()
        except KeyboardInterrupt:
            self.stdout.write("\n")
        finally:
            if readline is not None and self.history_file is not None:
                try:
                    readline.write_history_file(str(self.history_file))
                except OSError:
                    pass

    def _refresh_names(self) -> None:
        try:
            doc = self.client.call("rpc.discover", [])
            self.methods = sorted(m["name"] for m in doc.get("methods", []))
            info = self.client.call("chr_node_info", [])
            self.actors = sorted(a["name"] for a in info.get("tree", []))
        except ChrError as exc:
            self._say(f"warning: {exc}")

    def _say(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def _show(self, method: str, params: list[Any] | dict[str, Any] | None = None) -> None:
        try:
            self._say(json.dumps(self.client.call(method, params or []), indent=2, sort_keys=True))
        except ChrError as exc:
            self._say(f"error: {exc}")

    def emptyline(self) -> bool:
        return False

    def default(self, line: str) -> None:
        self._say(f"unknown command {line.split()[0]!r}; type help")

    # -- commands ------------------------------------------------------------------------------

    def do_info(self, arg: str) -> None:
        """info: the node's identity, ports, uptime and actor tree (chr_node_info)."""
        self._show("chr_node_info")

    def do_status(self, arg: str) -> None:
        """status: a summary of identity, health and actors."""
        try:
            self._say(format_status(self.client.call("chr_node_info", []), self.client.call("health", [])))
        except ChrError as exc:
            self._say(f"error: {exc}")

    def do_health(self, arg: str) -> None:
        """health: the five health layers with their reasons."""
        self._show("health")

    def do_stats(self, arg: str) -> None:
        """stats: network statistics (network_stats)."""
        self._show("network_stats")

    def do_peers(self, arg: str) -> None:
        """peers: known peers (peer_list)."""
        self._show("peer_list")

    def do_cron(self, arg: str) -> None:
        """cron: scheduled jobs with last and next run and failures."""
        self._show("cron_jobs")

    def do_restart(self, arg: str) -> None:
        """restart ACTOR: restart one actor (admin)."""
        if not arg.strip():
            self._say("usage: restart ACTOR   (Tab completes actor names)")
            return
        self._show("admin_restart_actor", [arg.strip()])

    def complete_restart(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return [a for a in self.actors if a.startswith(text)]

    def do_loglevel(self, arg: str) -> None:
        """loglevel LEVEL: set the log level of every actor (debug, info, warning, error)."""
        if arg.strip() not in LEVELS:
            self._say(f"usage: loglevel {'|'.join(LEVELS)}")
            return
        self._show("admin_set_log_level", [arg.strip()])

    def complete_loglevel(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return [level for level in LEVELS if level.startswith(text)]

    def do_call(self, arg: str) -> None:
        """call METHOD [PARAMS...]: any JSON-RPC method; params are JSON values (or one JSON object)."""
        try:
            words = shlex.split(arg)
        except ValueError as exc:
            self._say(f"error: {exc}")
            return
        if not words:
            self._say("usage: call METHOD [PARAMS...]")
            return
        self._show(words[0], parse_params(words[1:]))

    def complete_call(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return [name for name in self.methods if name.startswith(text)]

    def do_stop(self, arg: str) -> bool:
        """stop: stop the node (admin) and leave the shell."""
        self._show("admin_stop")
        return True

    def do_quit(self, arg: str) -> bool:
        """quit: leave the shell (the node keeps running)."""
        return True

    do_exit = do_quit

    def do_EOF(self, arg: str) -> bool:
        self._say("")
        return True


def _readline() -> Any:
    try:
        import readline
    except ImportError:  # no readline (Windows): the shell still works, without history
        return None
    return readline
