"""chr-node: a community relay node for a Diode-style P2P network (see docs/ and SPEC)."""

__version__ = "0.1.0"
