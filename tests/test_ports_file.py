"""The ports file (`<data_dir>/ports.json`): atomic writes, what a restarted listener binds, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chrnode.errors import ChrError
from chrnode.ports_file import (
    cli_port,
    ports_path,
    ports_to_bind,
    previous_ports,
    read_ports,
    remove_ports,
    write_ports,
)

ports = st.integers(min_value=0, max_value=65535)


@given(st.lists(ports, min_size=1, max_size=16), st.lists(st.one_of(st.none(), ports), max_size=16))
def test_only_zeros_are_replaced_and_only_by_a_known_port(
    configured: list[int], previous: list[int | None]
) -> None:
    chosen = ports_to_bind(tuple(configured), previous)
    assert len(chosen) == len(configured)
    for i, (want, got) in enumerate(zip(configured, chosen, strict=True)):
        if want:
            assert got == want, "a fixed port is never changed"
        else:
            assert got == ((previous[i] or 0) if i < len(previous) else 0)


def test_round_trip_and_removal(tmp_path: Path) -> None:
    content = {
        "rpc": 1234,
        "rpcs": 2345,
        "edge2": [3456, 4567],
        "peer2": 0,
        "pid": 9,
        "listening": ["edge2", "rpc", "rpcs"],
    }
    assert read_ports(tmp_path) is None
    write_ports(tmp_path, content)
    assert read_ports(tmp_path) == content
    assert [p.name for p in tmp_path.iterdir()] == ["ports.json"], "no temporary file is left"
    assert previous_ports(tmp_path, "edge2") == [3456, 4567]
    assert previous_ports(tmp_path, "rpc") == [1234]
    assert previous_ports(tmp_path, "peer2") == [], "a kind nobody reported is not reused"
    assert cli_port(tmp_path, "rpc", 0) == 1234 and cli_port(tmp_path, "rpc", 8545) == 8545
    remove_ports(tmp_path)
    remove_ports(tmp_path)  # twice is fine
    assert read_ports(tmp_path) is None
    with pytest.raises(ChrError, match="is the node running"):
        cli_port(tmp_path, "rpc", 0)


@given(st.binary(max_size=64))
def test_a_damaged_file_is_a_clear_error_and_never_reused(raw: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ports_path(tmp).write_bytes(raw)
        try:
            content = read_ports(tmp)
        except ChrError as exc:
            assert "ports file" in str(exc)
        else:
            assert isinstance(content, dict)
        for port in previous_ports(tmp, "rpc"):  # never raises, gives only real ports
            assert port is None or 0 < port < 65536
