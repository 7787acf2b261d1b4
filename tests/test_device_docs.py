"""docs/devices.md stays complete: every error code the node uses has a row saying what it means
and what to do, and every `chr-node device` action is shown."""

from __future__ import annotations

import argparse
import re

from chrnode.device.cli import add_device_commands
from chrnode.edge import codes
from chrnode.testing.anvil import REPO_ROOT

GUIDE = (REPO_ROOT / "docs" / "devices.md").read_text(encoding="utf-8")


def _code_table() -> dict[str, list[str]]:
    section = GUIDE[GUIDE.index("## 5. ") : GUIDE.index("## 6. ")]
    rows = {}
    for line in section.splitlines():
        found = re.match(r"\| `([a-z_]+)` \|(.*)\|$", line)
        if found:
            rows[found.group(1)] = [cell.strip() for cell in found.group(2).split("|")]
    return rows


def test_every_error_code_is_explained_with_what_to_do() -> None:
    rows = _code_table()
    assert list(rows) == list(codes.ERROR_CODES)  # the order of chrnode/edge/codes.py, none missing
    for code, (seen_as, meaning, todo) in rows.items():
        assert seen_as and meaning and todo, code


def test_every_device_action_is_in_the_guide() -> None:
    parser = argparse.ArgumentParser()
    add_device_commands(parser.add_subparsers(dest="command"))
    device = parser._subparsers._group_actions[0].choices["device"]  # type: ignore[union-attr]
    actions = device._subparsers._group_actions[0].choices
    assert set(actions) == {"keygen", "address", "ping", "publish", "bind"}
    for action in actions:
        assert f"chr-node device {action} " in GUIDE, action
