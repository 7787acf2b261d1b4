"""The exception tree of chrnode. Every error a user, operator or device can cause is one of these.

    ChrError                         root of everything chrnode raises on purpose
    ├── ConfigError                  a config value is wrong: names key, value, source, what is allowed
    ├── StorageError                 SQLite could not be opened, read or written
    ├── CryptoError                  a key, signature or certificate is malformed or does not verify
    ├── ProtocolError                EdgeV2 / peer framing or payload faults (SPEC 4)
    │   ├── LocalProtocolError       we were asked to send something that breaks the protocol
    │   └── RemoteProtocolError      the other side sent something that breaks the protocol
    ├── TicketError                  a ticket failed validation (SPEC 5); `.code` is the wire code
    ├── RpcError                     a JSON-RPC request failed; `.code` is the JSON-RPC error code
    ├── ChainError                   the chain could not answer (SPEC 7)
    │   ├── ChainUnavailable         every endpoint is down or timed out
    │   ├── WrongChain               an endpoint serves another chain id than configured
    │   └── ContractError            a call reverted or returned data of the wrong shape
    ├── NameError_                   a BNS name is malformed or its TLD unknown (no chain call made)
    └── ActorError                   the actor system could not start, answer or stop
        └── ActorRestarting          the asked actor is gone or restarting (fails at once)

Foreign exceptions (ssl, socket, requests, peewee, msgpack) are converted at the boundary with
``raise ... from exc`` so callers only need to know this tree.
"""

from __future__ import annotations


class ChrError(Exception):
    """Root of every error chrnode raises on purpose."""


class ConfigError(ChrError):
    """A configuration value is invalid. The message names key, value, source and what is allowed."""

    def __init__(self, key: str, value: object, source: str, allowed: str) -> None:
        self.key = key
        self.value = value
        self.source = source
        self.allowed = allowed
        super().__init__(f"config key {key!r}: value {value!r} from {source} is invalid; expected {allowed}")


class StorageError(ChrError):
    """SQLite could not be opened, read or written."""


class CryptoError(ChrError):
    """A key, signature or certificate is malformed or does not verify."""


class ProtocolError(ChrError):
    """An EdgeV2 or peer protocol fault (SPEC 4). `code` is the snake_case wire error code."""

    def __init__(self, message: str, code: str = "bad_frame", request_id: int | None = None) -> None:
        self.code = code
        self.request_id = request_id
        super().__init__(message)


class LocalProtocolError(ProtocolError):
    """We were about to send something that breaks the protocol."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol."""


class TicketError(ChrError):
    """A ticket failed one of the validation steps of SPEC 5. `code` is the wire error code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class RpcError(ChrError):
    """A JSON-RPC error with its numeric code (SPEC 8) and optional data."""

    def __init__(self, code: int, message: str, data: object = None) -> None:
        self.code = code
        self.data = data
        super().__init__(message)


class ChainError(ChrError):
    """The chain could not give an answer (SPEC 7)."""


class ChainUnavailable(ChainError):
    """Every configured endpoint is down or timed out."""


class WrongChain(ChainError):
    """An endpoint serves another chain id than the configured one."""


class ContractError(ChainError):
    """A contract call reverted or returned data of the wrong shape."""


class NameError_(ChrError):  # noqa: N801 - the builtin NameError must not be shadowed
    """A BNS name is malformed or has an unknown TLD; raised before any chain call."""


class ActorError(ChrError):
    """The actor system could not start, answer or stop."""


class ActorRestarting(ActorError):
    """An ask went to an actor that is gone or being restarted: failed at once, not after a timeout."""

    def __init__(self, name: str, asked: str) -> None:
        super().__init__(f"{name} is restarting; {asked} was not answered, try again in a moment")
        self.name = name


class ConfigFileError(ConfigError):
    """The config file cannot be read or is not valid TOML; names the file, and line and column if known."""

    def __init__(self, path: object, reason: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__("config_file", str(path), f"file:{path}", "a readable UTF-8 TOML file")
        self.path = path
        self.reason = reason
        self.line = line
        self.column = column
        where = f"config file {path}"
        if line is not None:
            where += f", line {line}" + (f", column {column}" if column is not None else "")
        self.args = (f"{where}: {reason}",)


class ContractReverted(ContractError):
    """A contract call or transaction reverted (SPEC 7). `reason` is the decoded revert reason
    (Error(string), Panic(uint256) or a custom error the caller knows) or None; `data` the raw revert data."""

    def __init__(self, message: str, data: bytes = b"", reason: str | None = None) -> None:
        super().__init__(message)
        self.data = data
        self.reason = reason


class FrameError(RemoteProtocolError):
    """The byte stream itself is broken (bad version or length, truncated frame: SPEC 4).

    Unlike other RemoteProtocolErrors the stream cannot be resynchronised: close the connection.
    """


class RequestRefused(ProtocolError):
    """The other side answered an EdgeV2 request with an error answer (SPEC 4); `.code` says why."""


class ConnectionClosed(ProtocolError):
    """The EdgeV2 connection is closed; `.code` is the reason the node gave in a notify, if any."""


class ChainNotConfigured(ChainError):
    """The node has no address for a contract it needs (no `*_contract` key, no contracts.json):
    the chain features that need it are off, and asking for them fails at once (SPEC 7)."""


def describe(exc: BaseException) -> str:
    """``code: message`` for an error that carries an EdgeV2 wire code (SPEC 4), else the message:
    what the device CLI prints, so that a program and a person both read the reason."""
    code = getattr(exc, "code", None)
    return f"{code}: {exc}" if isinstance(code, str) and code else str(exc)
