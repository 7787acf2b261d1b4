"""A device's secp256k1 key on disk (SPEC 2): 64 hex digits in a file only its owner may read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from chrnode.crypto import PrivateKey
from chrnode.errors import CryptoError

__all__ = ["DeviceKey"]


class DeviceKey:
    """A device key and, if it came from one, its file."""

    def __init__(self, key: PrivateKey, path: Path | None = None) -> None:
        self.private_key = key
        self.path = path

    @property
    def address(self) -> bytes:
        return self.private_key.address

    @property
    def hex_address(self) -> str:
        return self.private_key.hex_address

    @classmethod
    def generate(cls) -> DeviceKey:
        """A fresh key kept in memory only."""
        return cls(PrivateKey.generate())

    @classmethod
    def create(cls, path: Path | str) -> DeviceKey:
        """A fresh key written to ``path`` (mode 0600); refuses to replace an existing file."""
        path = Path(path)
        key = PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise CryptoError(
                f"device key file {path} already exists; load it instead of creating it"
            ) from exc
        except OSError as exc:
            raise CryptoError(f"cannot create device key file {path}: {exc.strerror or exc}") from exc
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key.to_hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return cls(key, path)

    @classmethod
    def load(cls, path: Path | str) -> DeviceKey:
        """The key in ``path``; refuses a file other users may read or write, or bad content."""
        path = Path(path)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            text = path.read_text(encoding="ascii")
        except FileNotFoundError as exc:
            raise CryptoError(f"device key file {path} does not exist (create one first)") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise CryptoError(f"cannot read device key file {path}: {exc}") from exc
        if mode & 0o077:
            raise CryptoError(
                f"device key file {path} has mode {mode:04o}; it must be readable by its owner only "
                f"(run 'chmod 600 {path}')"
            )
        try:
            return cls(PrivateKey.from_hex(text), path)
        except CryptoError as exc:
            raise CryptoError(f"device key file {path} is malformed: {exc}") from exc

    @classmethod
    def load_or_create(cls, path: Path | str) -> DeviceKey:
        """Load ``path``, or create it when it does not exist."""
        if Path(path).exists():
            return cls.load(path)
        try:
            return cls.create(path)
        except CryptoError:
            if Path(path).exists():  # another process created it first
                return cls.load(path)
            raise

    def __repr__(self) -> str:
        return f"DeviceKey(address={self.hex_address}, path={self.path})"
