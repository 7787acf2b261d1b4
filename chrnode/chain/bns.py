"""BNS name syntax (SPEC 7): pure parsing, checked before any chain call.

    mysite.chronara.com   ->  com:mysite       (tld one of com, net, ai, io, org, app)
    mysite                ->  default:mysite   (a bare name uses the default namespace)
    com:mysite            ->  com:mysite       (the namespace form is accepted as is, once checked)

A name label is 1 to 63 characters of [a-z0-9-], not starting or ending with '-'. Names are
case-sensitive on chain, so upper case is refused rather than silently folded. Anything else
raises `NameError_` saying what was wrong and what was expected.
"""

from __future__ import annotations

import re

from chrnode.errors import NameError_

TLDS = ("com", "net", "ai", "io", "org", "app")
DEFAULT_NAMESPACE = "default"
DOMAIN = "chronara"
MAX_NAME_TEXT = 100  # longest accepted input: 63 + ".chronara." + tld, with room to spare

_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_EXPECTED = f"'name.{DOMAIN}.<tld>' with tld in {', '.join(TLDS)}, a bare 'name', or '<tld>:name'"


def parse_name(name: object) -> str:
    """The namespace string ("com:mysite") a BNS name maps to, or NameError_."""
    if not isinstance(name, str):
        raise NameError_(f"a BNS name must be a string, got {type(name).__name__}")
    if not name:
        raise NameError_(f"empty BNS name; expected {_EXPECTED}")
    if len(name) > MAX_NAME_TEXT:
        raise NameError_(f"BNS name of {len(name)} characters is too long; expected {_EXPECTED}")
    if ":" in name:
        tld, _, label = name.partition(":")
        if tld != DEFAULT_NAMESPACE:
            _check_tld(tld, name)
        _check_label(label, name)
        return f"{tld}:{label}"
    parts = name.split(".")
    if len(parts) == 1:
        _check_label(name, name)
        return f"{DEFAULT_NAMESPACE}:{name}"
    if len(parts) != 3 or parts[1] != DOMAIN:
        raise NameError_(f"BNS name {name!r} is not of the form expected: {_EXPECTED}")
    label, _, tld = parts
    _check_tld(tld, name)
    _check_label(label, name)
    return f"{tld}:{label}"


def format_name(namespace: str) -> str:
    """The human form of a namespace: "com:mysite" -> "mysite.chronara.com", "default:x" -> "x"."""
    parsed = parse_name(namespace)
    tld, _, label = parsed.partition(":")
    return label if tld == DEFAULT_NAMESPACE else f"{label}.{DOMAIN}.{tld}"


def _check_tld(tld: str, name: str) -> None:
    if tld not in TLDS:
        raise NameError_(f"BNS name {name!r} has unknown TLD {tld!r}; expected one of {', '.join(TLDS)}")


def _check_label(label: str, name: str) -> None:
    if _LABEL_RE.match(label):
        return
    if not label:
        problem = "an empty name part"
    elif len(label) > 63:
        problem = f"a name part of {len(label)} characters (at most 63)"
    elif label.startswith("-") or label.endswith("-"):
        problem = "a name part starting or ending with '-'"
    else:
        bad = sorted({c for c in label if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-")})
        problem = f"characters {''.join(bad)!r} outside a-z, 0-9 and '-'"
    raise NameError_(f"BNS name {name!r} has {problem}")
