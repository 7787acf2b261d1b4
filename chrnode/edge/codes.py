"""The documented list of EdgeV2 error codes (SPEC 4, SPEC 5).

An error answer carries ``{id, code, message}``: ``code`` is one of the snake_case strings below,
stable for programs; ``message`` is a sentence for people and may change. docs/protocol.md lists the
same table; a test keeps the two in step. Receivers must accept codes they do not know (newer nodes
may add some) and treat them as a generic failure of the request.
"""

from __future__ import annotations

__all__ = ["ERROR_CODES", "is_valid_code"]

# --- framing and payload (SPEC 4) -----------------------------------------------------------------
BAD_FRAME = "bad_frame"
FRAME_TOO_LARGE = "frame_too_large"
UNKNOWN_TYPE = "unknown_type"
BAD_PAYLOAD = "bad_payload"
BAD_COMPRESSION = "bad_compression"
UNEXPECTED_MESSAGE = "unexpected_message"

# --- session and hello (SPEC 3) -------------------------------------------------------------------
HELLO_REQUIRED = "hello_required"
UNSUPPORTED_VERSION = "unsupported_version"
BAD_SIGNATURE = "bad_signature"
WRONG_DEVICE = "wrong_device"

# --- tickets (SPEC 5, validation steps 1-6 in order) ----------------------------------------------
EPOCH_TOO_LOW = "epoch_too_low"
EPOCH_TOO_HIGH = "epoch_too_high"
WRONG_NODE = "wrong_node"
WRONG_CHAIN = "wrong_chain"
FLEET_DENIED_NODE = "fleet_denied_node"
FLEET_DENIED_DEVICE = "fleet_denied_device"
TOO_LOW = "too_low"
JUMP_TOO_LARGE = "jump_too_large"
PAYMENT_MISSING = "payment_missing"
PAYMENT_INVALID = "payment_invalid"
TICKET_REQUIRED = "ticket_required"

# --- ports, lookups and names ---------------------------------------------------------------------
NOT_FOUND = "not_found"
REFUSED = "refused"
UNKNOWN_REF = "unknown_ref"
REF_IN_USE = "ref_in_use"
FORBIDDEN = "forbidden"
BAD_NAME = "bad_name"

# --- node state -----------------------------------------------------------------------------------
RATE_LIMITED = "rate_limited"
BUSY = "busy"
TOO_SLOW = "too_slow"
TIMEOUT = "timeout"
UNAVAILABLE = "unavailable"
SHUTTING_DOWN = "shutting_down"
REPLACED = "replaced"
INTERNAL_ERROR = "internal_error"

ERROR_CODES: dict[str, str] = {
    BAD_FRAME: "wrong version, flag bits or length in a frame header; the connection is closed",
    FRAME_TOO_LARGE: "the frame (or its decompressed payload) is over the receiver's size limit",
    UNKNOWN_TYPE: "the frame's message type is not in the table of SPEC 4",
    BAD_PAYLOAD: "the payload is not a msgpack map of the documented fields and types",
    BAD_COMPRESSION: "a compressed payload is not a valid zlib stream",
    UNEXPECTED_MESSAGE: "the message is not allowed here (an answer nobody asked for, a second hello)",
    HELLO_REQUIRED: "the first message of a session must be hello",
    UNSUPPORTED_VERSION: "the hello's protocol version is not one this node speaks",
    BAD_SIGNATURE: "a signature is malformed or does not recover to a public key",
    WRONG_DEVICE: "a signature recovers to another address than the device's",
    EPOCH_TOO_LOW: "the ticket's epoch is older than the previous epoch",
    EPOCH_TOO_HIGH: "the ticket's epoch is later than the current epoch",
    WRONG_NODE: "the ticket names another node",
    WRONG_CHAIN: "the ticket names another chain id",
    FLEET_DENIED_NODE: "the ticket's fleet does not allow this node",
    FLEET_DENIED_DEVICE: "the ticket's fleet does not allow this device",
    TOO_LOW: "the ticket's totals are below the stored ticket (the answer carries it as `latest`)",
    JUMP_TOO_LARGE: "the ticket's totals grow by more than the node accepts in one step",
    PAYMENT_MISSING: "the fleet requires a payment proof and the ticket has none",
    PAYMENT_INVALID: "the payment proof is not a mined transaction paying the fleet's price",
    TICKET_REQUIRED: "no valid ticket arrived in time (after hello or a ticket_request)",
    NOT_FOUND: "the device, name, node or object asked for is not known",
    REFUSED: "the target device refused the port",
    UNKNOWN_REF: "no open port has this ref on this connection",
    REF_IN_USE: "the portopen's ref is already used by a port here; the opener picks another (SPEC 4)",
    FORBIDDEN: "the port's flags do not allow this direction, or the device may not do this",
    BAD_NAME: "the BNS name is malformed or its top-level domain unknown",
    RATE_LIMITED: "too many requests; slow down and retry later",
    BUSY: "the node is at its connection limit",
    TOO_SLOW: "a reader of a shared port (channel) could not keep up and was closed (notify only)",
    TIMEOUT: "the node gave up waiting (for the target device, a peer or the chain)",
    UNAVAILABLE: "a service the request needs (chain, DHT) is unavailable right now",
    SHUTTING_DOWN: "the node is stopping; reconnect to another node",
    REPLACED: "a newer session of the same device connected; this one is closed (notify only)",
    INTERNAL_ERROR: "the node failed; the message says what, the request may be retried",
}

MAX_CODE_LENGTH = 64


def is_valid_code(code: object) -> bool:
    """Whether ``code`` has the shape of an error code (snake_case ASCII), known or not."""
    return (
        isinstance(code, str)
        and 0 < len(code) <= MAX_CODE_LENGTH
        and code[0].isalpha()
        and all(c.islower() or c.isdigit() or c == "_" for c in code)
        and code.isascii()
    )
