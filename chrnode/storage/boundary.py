"""The storage layer's boundary with peewee and sqlite3.

peewee and sqlite3 errors are converted to StorageError here (naming the file and a reason an
operator can act on), and the few untyped peewee calls are wrapped once so the rest of the layer
type-checks strictly.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import peewee

from chrnode.errors import StorageError

# Substrings of SQLite's messages and the reason an operator should read instead.
_REASONS: tuple[tuple[str, str], ...] = (
    ("database is locked", "the database is locked: another connection held it longer than the busy timeout"),
    ("database table is locked", "a table is locked by another statement on the same connection"),
    ("file is not a database", "the file is corrupt or is not an SQLite database"),
    ("malformed", "the database file is corrupt (malformed)"),
    (
        "unable to open database file",
        "the file cannot be opened or created: check that the directory "
        "exists and that this user may write to it",
    ),
    ("readonly database", "the database is read-only here: check the file's and the directory's permissions"),
    ("disk i/o error", "the disk reported an I/O error"),
    ("database or disk is full", "the disk is full"),
    ("constraint failed", "a value broke a table constraint"),
)


def storage_error(path: Path, action: str, exc: BaseException) -> StorageError:
    """A StorageError for `exc` raised while doing `action` on the file at `path`."""
    text = str(exc)
    low = text.lower()
    reason = next((why for needle, why in _REASONS if needle in low), text)
    return StorageError(f"SQLite database {path}: {action} failed: {reason} ({type(exc).__name__}: {text})")


@contextmanager
def converting(path: Path, action: str) -> Iterator[None]:
    """Turn peewee/sqlite errors raised inside the block into StorageError."""
    try:
        yield
    except (peewee.PeeweeException, sqlite3.Error) as exc:
        raise storage_error(path, action, exc) from exc


def run_sql(db: peewee.Database, statement: str, params: Sequence[object] = ()) -> Any:
    """db.execute_sql with a typed signature; returns the sqlite3 cursor."""
    return db.execute_sql(statement, tuple(params))  # type: ignore[no-untyped-call]


def run_query(db: peewee.Database, query: Any) -> Any:
    """Execute a peewee query on `db` (models are unbound, see models.py)."""
    return query.execute(db)
