"""Contract ABIs from the committed artifacts: call encoding, result, event and revert decoding (SPEC 7).

The artifacts are `chrnode/chain/artifacts/<Name>.json` (`{"abi", "bytecode"}`), written by
`tools/build_contracts.py`. Pure code: no I/O besides reading the artifact once.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError
from eth_hash.auto import keccak

from chrnode.chain import hexcodec as hx
from chrnode.errors import ChainError, ContractError

CONTRACT_NAMES = ("BnsRegistry", "ChaiToken", "Fleet", "TicketRegistry")


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes


@functools.cache
def load_artifact(name: str) -> Artifact:
    """The compiled contract `name` as committed with the package."""
    if name not in CONTRACT_NAMES:
        raise ValueError(f"unknown contract {name!r}; expected one of {CONTRACT_NAMES}")
    text = resources.files("chrnode.chain").joinpath("artifacts", f"{name}.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    return Artifact(name, raw["abi"], bytes.fromhex(raw["bytecode"].removeprefix("0x")))


def canonical_type(param: dict[str, Any]) -> str:
    """The ABI type string of one parameter, tuples spelled out: `(uint256,address)[]`."""
    kind: str = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@dataclass(frozen=True)
class _Function:
    name: str
    selector: bytes
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class _Event:
    name: str
    topic: bytes
    params: tuple[tuple[str, str, bool], ...]  # (name, type, indexed)


@dataclass(frozen=True)
class _Error:
    name: str
    types: tuple[str, ...]
    names: tuple[str, ...]


class ContractAbi:
    """Encoding and decoding for one contract's ABI (no overloaded function names)."""

    def __init__(self, name: str, abi: list[dict[str, Any]]) -> None:
        self.name = name
        self._functions: dict[str, _Function] = {}
        self._events: dict[str, _Event] = {}
        self._errors: dict[bytes, _Error] = {}
        for entry in abi:
            kind = entry.get("type")
            inputs = tuple(canonical_type(p) for p in entry.get("inputs", []))
            if kind == "function":
                selector = keccak(f"{entry['name']}({','.join(inputs)})".encode())[:4]
                outputs = tuple(canonical_type(p) for p in entry.get("outputs", []))
                self._functions[entry["name"]] = _Function(entry["name"], selector, inputs, outputs)
            elif kind == "event":
                topic = keccak(f"{entry['name']}({','.join(inputs)})".encode())
                params = tuple(
                    (p["name"], canonical_type(p), bool(p.get("indexed"))) for p in entry["inputs"]
                )
                self._events[entry["name"]] = _Event(entry["name"], topic, params)
            elif kind == "error":
                selector = keccak(f"{entry['name']}({','.join(inputs)})".encode())[:4]
                names = tuple(p["name"] for p in entry.get("inputs", []))
                self._errors[selector] = _Error(entry["name"], inputs, names)

    @classmethod
    def from_artifact(cls, name: str) -> ContractAbi:
        return cls(name, load_artifact(name).abi)

    def event_topic(self, event: str) -> bytes:
        """topic0 of `event`: keccak256 of its signature."""
        ev = self._events.get(event)
        if ev is None:
            raise ValueError(f"{self.name} has no event {event!r}")
        return ev.topic

    def function_names(self) -> list[str]:
        return sorted(self._functions)

    def encode_call(self, function: str, *args: Any) -> bytes:
        """Selector and ABI-encoded arguments of a call to `function`."""
        fn = self._function(function)
        if len(args) != len(fn.inputs):
            raise TypeError(
                f"{self.name}.{function} takes {len(fn.inputs)} arguments {fn.inputs}, got {len(args)}"
            )
        try:
            return fn.selector + abi_encode(list(fn.inputs), list(args))
        except (EncodingError, TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}.{function}: arguments do not fit {fn.inputs}: {exc}") from exc

    def encode_constructor(self, bytecode: bytes, types: tuple[str, ...], *args: Any) -> bytes:
        return bytecode + abi_encode(list(types), list(args))

    def decode_result(self, function: str, data: bytes) -> tuple[Any, ...]:
        fn = self._function(function)
        try:
            values = abi_decode(list(fn.outputs), data)
        except (DecodingError, OverflowError, ValueError) as exc:
            raise ContractError(
                f"{self.name}.{function} returned {len(data)} bytes that do not decode as {fn.outputs}: "
                f"{exc}; is the configured address really this contract?"
            ) from exc
        return tuple(_normalise(kind, value) for kind, value in zip(fn.outputs, values, strict=True))

    def describe_error(self, data: bytes) -> str | None:
        """A custom error of this contract as `Name(arg=value, ...)`, or None if the data is not one."""
        error = self._errors.get(data[:4])
        if error is None:
            return None
        try:
            values = abi_decode(list(error.types), data[4:])
        except (DecodingError, OverflowError, ValueError):
            return None
        shown = ", ".join(
            f"{n}={_show(_normalise(t, v))}" for n, t, v in zip(error.names, error.types, values, strict=True)
        )
        return f"{error.name}({shown})"

    def decode_logs(self, event: str, logs: list[dict[str, Any]], address: bytes) -> list[dict[str, Any]]:
        """The `event` logs emitted by the contract at `address`, as {param: value} dicts."""
        ev = self._events.get(event)
        if ev is None:
            raise ValueError(f"{self.name} has no event {event!r}")
        decoded = []
        for entry in logs:
            try:
                emitter = hx.parse_address(entry.get("address"), "log address")
                topics = [hx.parse_data(t, "log topic") for t in entry.get("topics", [])]
                data = hx.parse_data(entry.get("data"), "log data")
            except (ChainError, AttributeError) as exc:
                raise ChainError(
                    f"malformed log in receipt: {str(entry)[:80]!r}; expected address, topics and data"
                ) from exc
            if emitter != address or not topics or topics[0] != ev.topic:
                continue
            decoded.append(self._decode_event(ev, topics[1:], data))
        return decoded

    def _decode_event(self, ev: _Event, topics: list[bytes], data: bytes) -> dict[str, Any]:
        indexed = [(n, t) for n, t, is_indexed in ev.params if is_indexed]
        plain = [(n, t) for n, t, is_indexed in ev.params if not is_indexed]
        if len(topics) != len(indexed):
            raise ChainError(
                f"{self.name}.{ev.name} log has {len(topics)} indexed topics, expected {len(indexed)}"
            )
        try:
            plain_values = abi_decode([t for _, t in plain], data)
            values = {n: _normalise(t, v) for (n, t), v in zip(plain, plain_values, strict=True)}
            for (name, kind), topic in zip(indexed, topics, strict=True):
                # Dynamic indexed values are stored as their hash; only static ones decode.
                dynamic = kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("(")
                values[name] = topic if dynamic else _normalise(kind, abi_decode([kind], topic)[0])
        except (DecodingError, OverflowError, ValueError) as exc:
            raise ChainError(f"{self.name}.{ev.name} log does not decode: {exc}") from exc
        return values

    def _function(self, function: str) -> _Function:
        fn = self._functions.get(function)
        if fn is None:
            raise ValueError(f"{self.name} has no function {function!r}")
        return fn


def _normalise(kind: str, value: Any) -> Any:
    """Addresses as 20 bytes (eth-abi gives checksummed strings), like everywhere in chrnode."""
    if kind == "address":
        return bytes.fromhex(value[2:])
    if kind.startswith("address[") and kind.endswith("]"):
        return tuple(bytes.fromhex(v[2:]) for v in value)
    return value


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    return str(value)
