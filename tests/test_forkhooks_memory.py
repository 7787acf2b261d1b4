"""What the daemon prepares before the first fork so that each child stays small (issue 9, item 7).

The memory figures themselves are bench/bench_memory.py's; these check that the preparation
does what it says and changes nothing it must not.
"""

from __future__ import annotations

import _abc
import collections.abc
import os
import socket
from pathlib import Path

from chrnode import forkhooks, logsink
from chrnode.identity import NODE_CERT_FILE, load_node_identity


def _negative_cache(abc: type) -> set[type]:
    return {ref() for ref in _abc._get_dump(abc)[2]}


def _positive_cache(abc: type) -> set[type]:
    return {ref() for ref in _abc._get_dump(abc)[1]}


def test_abc_caches_answer_for_a_type_after_warming() -> None:
    class Probe:
        pass

    class ProbeMap(dict):  # type: ignore[type-arg]
        pass

    assert Probe not in _negative_cache(collections.abc.Mapping)
    assert forkhooks.warm_abc_caches(extra=(Probe, ProbeMap)) > 100
    assert Probe in _negative_cache(collections.abc.Mapping)
    assert Probe in _negative_cache(collections.abc.Iterable)
    assert ProbeMap in _positive_cache(collections.abc.Mapping)
    assert isinstance(ProbeMap(), collections.abc.Mapping)
    assert not isinstance(Probe(), collections.abc.Mapping)


def test_listening_fds_only_looks() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    plain = socket.socket()
    try:
        found = forkhooks.listening_fds()
        assert listener.fileno() in found
        assert plain.fileno() not in found
        # still listening: a client connects
        with socket.create_connection(listener.getsockname(), timeout=5):
            conn, _ = listener.accept()
            conn.close()
    finally:
        listener.close()
        plain.close()


def test_a_child_logs_through_the_handler_the_parent_made(tmp_path: Path) -> None:
    devnull = open(os.devnull, "w")
    sink = logsink.LogSink(tmp_path / "node.log", stream=devnull).start()
    try:
        logsink.prepare_child_handler()
        made = logsink._child_handler
        assert made is not None and made.sock is sink.send
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: what chrnode.actorsys runs after a fork
            try:
                logsink.route_child_logging()
                import logging

                same = logging.getLogger().handlers == [made]
                logging.getLogger("chrnode.test").warning("from the child %d", os.getpid())
                os.write(write_end, b"same" if same else b"other")
            finally:
                os._exit(0)
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
        assert os.read(read_end, 10) == b"same"
        os.close(read_end)
        assert status == 0
    finally:
        sink.stop()
        logsink.prepare_child_handler()  # no sink now: forget the handler
        devnull.close()
    assert f"from the child {pid}" in (tmp_path / "node.log").read_text()


def test_identity_without_the_certificate_check_takes_the_files_as_they_are(tmp_path: Path) -> None:
    made = load_node_identity(tmp_path)
    cert = tmp_path / NODE_CERT_FILE
    assert made.cert_path == cert
    cert.write_text("not a certificate")
    unchecked = load_node_identity(tmp_path, check_certificate=False)
    assert unchecked.cert_path == cert and cert.read_text() == "not a certificate"
    assert unchecked.key.address == made.key.address
    checked = load_node_identity(tmp_path)  # the daemon's check replaces it
    assert checked.cert_path == cert and cert.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_identity_without_the_check_still_makes_missing_files(tmp_path: Path) -> None:
    made = load_node_identity(tmp_path, check_certificate=False)
    assert made.cert_path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert made.key_pem_path.exists()
