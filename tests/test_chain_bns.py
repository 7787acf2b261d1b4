"""BNS name syntax (SPEC 7): parsed before any chain call, bad names refused with a clear error."""

from __future__ import annotations

import re
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chrnode.chain.bns import DEFAULT_NAMESPACE, TLDS, format_name, parse_name
from chrnode.chain.contracts import Bns
from chrnode.chain.rpc import RemoteRpc
from chrnode.errors import NameError_


@pytest.mark.parametrize(
    ("name", "namespace"),
    [
        ("mysite.chronara.com", "com:mysite"),
        ("a.chronara.net", "net:a"),
        ("robot-7.chronara.ai", "ai:robot-7"),
        ("x1.chronara.io", "io:x1"),
        ("charity.chronara.org", "org:charity"),
        ("0day.chronara.app", "app:0day"),
        ("mysite", f"{DEFAULT_NAMESPACE}:mysite"),
        ("com:mysite", "com:mysite"),
        ("default:thing", "default:thing"),
        ("a" * 63 + ".chronara.com", "com:" + "a" * 63),
    ],
)
def test_valid_names_map_to_namespaces(name: str, namespace: str) -> None:
    assert parse_name(name) == namespace


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("mysite.chronara.xyz", "unknown TLD 'xyz'"),
        ("mysite.example.com", "not of the form"),
        ("a.b.chronara.com", "not of the form"),
        ("mysite.chronara.com.", "not of the form"),
        (".chronara.com", "empty name part"),
        ("-bad.chronara.com", "starting or ending with '-'"),
        ("bad-", "starting or ending with '-'"),
        ("MySite", "'MS' outside a-z"),
        ("my_site", "'_' outside"),
        ("my site", "' ' outside"),
        ("caf\u00e9", "outside a-z"),
        ("a" * 64, "64 characters (at most 63)"),
        ("xyz:mysite", "unknown TLD 'xyz'"),
        ("com:", "empty name part"),
        ("a" * 200, "too long"),
    ],
)
def test_bad_names_are_refused_with_a_specific_message(name: str, message: str) -> None:
    with pytest.raises(NameError_, match=re.escape(message)):
        parse_name(name)


def test_non_string_is_refused() -> None:
    with pytest.raises(NameError_, match="must be a string, got bytes"):
        parse_name(b"mysite")


@pytest.mark.parametrize("tld", TLDS)
def test_format_is_the_inverse_of_parse(tld: str) -> None:
    assert format_name(f"{tld}:site-1") == f"site-1.chronara.{tld}"
    assert parse_name(format_name(f"{tld}:site-1")) == f"{tld}:site-1"
    assert format_name("default:bare") == "bare"


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)


@given(_LABEL, st.sampled_from(TLDS))
def test_generated_valid_names_round_trip(label: str, tld: str) -> None:
    assert parse_name(f"{label}.chronara.{tld}") == f"{tld}:{label}"
    assert parse_name(label) == f"default:{label}"


@given(st.text(max_size=120))
def test_arbitrary_text_is_parsed_or_refused_with_name_error(text: str) -> None:
    try:
        namespace = parse_name(text)
    except NameError_ as exc:
        assert str(exc)  # always a message for people
        return
    tld, _, label = namespace.partition(":")
    assert tld in (*TLDS, DEFAULT_NAMESPACE)
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label)


def test_bad_name_makes_no_chain_call() -> None:
    # The endpoint is a closed port: a chain call would raise ChainUnavailable, not NameError_.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with RemoteRpc([f"http://127.0.0.1:{port}"], 31337, timeout=1.0) as rpc:
        bns = Bns(rpc, "0x" + "11" * 20)
        with pytest.raises(NameError_, match="unknown TLD"):
            bns.resolve_name("mysite.chronara.nope")
