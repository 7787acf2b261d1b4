"""The single writer and the reader (SPEC 10): every op, the best-ticket rule (SPEC 5), batch
atomicity, bad ops refused with StorageError, expiry. Real SQLite files in tmp_path."""

from __future__ import annotations

import math
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chrnode.errors import StorageError
from chrnode.storage import (
    CacheDelete,
    CachePurgeExpired,
    CachePut,
    DhtPurgeExpired,
    DhtPut,
    KvDelete,
    KvSet,
    NodeDatabase,
    NodeStatsRow,
    PeerSeen,
    Reader,
    RewardPeriod,
    StatsPrune,
    StatsRollup,
    TicketMarkSubmitted,
    TicketUpsert,
    WriteOp,
    Writer,
    open_database,
)
from chrnode.storage.boundary import run_sql

DEV = b"\x01" * 20
FLEET = b"\x02" * 20
SIGNER = b"\x03" * 20


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Iterator[NodeDatabase]:
    database = open_database(tmp_path / "node.sqlite")
    yield database
    database.shutdown()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def writer(db: NodeDatabase, clock: Clock) -> Writer:
    return Writer(db, clock=clock)


@pytest.fixture
def reader(db: NodeDatabase) -> Reader:
    return Reader(db)


def ticket(total_bytes: int, epoch: int = 7, device: bytes = DEV, wire: bytes | None = None) -> TicketUpsert:
    return TicketUpsert(device, FLEET, epoch, total_bytes, 1, wire or f"wire-{total_bytes}".encode(), 50.0)


def test_kv_set_get_delete(writer: Writer, reader: Reader) -> None:
    assert writer.apply([KvSet("name", b"\x00\xffbin"), KvSet("other", b"")]) == [None, None]
    assert reader.kv_get("name") == b"\x00\xffbin"
    assert reader.kv_get("other") == b""
    assert writer.apply([KvSet("name", b"v2"), KvDelete("other"), KvDelete("missing")]) == [None, True, False]
    assert reader.kv_get("name") == b"v2"
    assert reader.kv_get("other") is None


def test_blobs_are_stored_as_sqlite_blobs(writer: Writer, db: NodeDatabase) -> None:
    writer.apply([KvSet("k", b"abc"), ticket(10)])
    assert run_sql(db, "SELECT typeof(value) FROM kv WHERE key='k'").fetchone()[0] == "blob"
    assert run_sql(db, "SELECT typeof(device), typeof(fleet), typeof(ticket) FROM tickets").fetchone() == (
        "blob",
        "blob",
        "blob",
    )


def test_best_ticket_rule(writer: Writer, reader: Reader) -> None:
    [first] = writer.apply([ticket(100)])
    assert first.stored and first.row.total_bytes == 100 and first.row.ticket == b"wire-100"
    [lower, equal] = writer.apply([ticket(99), ticket(100, wire=b"other-100")])
    assert not lower.stored and lower.row.total_bytes == 100 and lower.row.ticket == b"wire-100"
    assert not equal.stored and equal.row.ticket == b"wire-100"  # an equal ticket does not replace
    [higher] = writer.apply([ticket(101)])
    assert higher.stored
    best = reader.best_ticket(DEV, FLEET, 7)
    assert best is not None and best.total_bytes == 101 and best.ticket == b"wire-101"
    assert reader.best_ticket(DEV, FLEET, 8) is None
    assert reader.best_ticket(b"\x09" * 20, FLEET, 7) is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(totals=st.lists(st.integers(min_value=0, max_value=2**63 - 1), min_size=1, max_size=12))
def test_best_ticket_is_the_first_ticket_with_the_highest_total(tmp_path: Path, totals: list[int]) -> None:
    db = open_database(tmp_path / f"hyp-{uuid.uuid4().hex}.sqlite")
    try:
        writer = Writer(db)
        results = writer.apply([ticket(t, wire=f"{i}".encode()) for i, t in enumerate(totals)])
        best_so_far = -1
        for i, (total, result) in enumerate(zip(totals, results, strict=True)):
            assert result.stored == (total > best_so_far), (i, totals)
            best_so_far = max(best_so_far, total)
            assert result.row.total_bytes == best_so_far
        stored = Reader(db).best_ticket(DEV, FLEET, 7)
        assert stored is not None
        assert stored.total_bytes == max(totals)
        assert stored.ticket == str(totals.index(max(totals))).encode()
    finally:
        db.shutdown()


def test_tickets_submission_state(writer: Writer, reader: Reader) -> None:
    other = b"\x04" * 20
    writer.apply([ticket(500), ticket(900, device=other), ticket(10, epoch=6)])
    assert [t.total_bytes for t in reader.unsubmitted_tickets(7)] == [900, 500]  # biggest first
    assert reader.unsubmitted_tickets(7, limit=1)[0].device == other
    # A mark for totals the row no longer holds is refused: that ticket was superseded.
    assert writer.apply([TicketMarkSubmitted(DEV, FLEET, 7, 499, 60.0, b"tx0")]) == [False]
    assert writer.apply([TicketMarkSubmitted(DEV, FLEET, 7, 500, 60.0, b"tx1")]) == [True]
    assert [t.device for t in reader.unsubmitted_tickets(7)] == [other]
    row = reader.best_ticket(DEV, FLEET, 7)
    assert row is not None and row.submitted_at == 60.0 and row.submit_tx == b"tx1" and row.accepted is None
    writer.apply([TicketMarkSubmitted(DEV, FLEET, 7, 500, 61.0, b"tx1", accepted=True)])
    row = reader.best_ticket(DEV, FLEET, 7)
    assert row is not None and row.accepted is True
    # A better ticket after submission must be submitted again.
    [result] = writer.apply([ticket(600)])
    assert result.stored and result.row.submitted_at is None and result.row.accepted is None
    assert {t.total_bytes for t in reader.unsubmitted_tickets(7)} == {600, 900}


def test_batch_is_atomic_when_the_database_refuses_an_op(
    writer: Writer, reader: Reader, db: NodeDatabase
) -> None:
    writer.apply([KvSet("before", b"1")])
    run_sql(
        db,
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON kv WHEN NEW.key = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'boom is refused'); END",
    )
    batch: list[WriteOp] = [
        KvSet("a", b"1"),
        ticket(5),
        KvDelete("before"),
        KvSet("boom", b"x"),
        KvSet("b", b"2"),
    ]
    with pytest.raises(StorageError, match=r"node\.sqlite: writing a batch of 5 ops failed.*boom is refused"):
        writer.apply(batch)
    assert reader.kv_get("a") is None
    assert reader.kv_get("b") is None
    assert reader.kv_get("before") == b"1"
    assert reader.best_ticket(DEV, FLEET, 7) is None
    # The writer is still usable after a failed batch.
    assert writer.apply([KvSet("a", b"ok")]) == [None]
    assert reader.kv_get("a") == b"ok"


def unchecked(cls: type, **values: object) -> WriteOp:
    """An op as it would arrive unpickled: __init__ (and its checks) never ran."""
    op = object.__new__(cls)
    for name, value in values.items():
        object.__setattr__(op, name, value)
    assert isinstance(op, WriteOp)
    return op


def test_a_bad_op_in_a_batch_rejects_the_whole_batch(writer: Writer, reader: Reader) -> None:
    bad = unchecked(TicketUpsert, device=b"short", fleet=FLEET, epoch=1, total_bytes=1, total_connections=1,
                    ticket=b"t", received_at=1.0)  # fmt: skip
    with pytest.raises(StorageError, match=r"TicketUpsert\.device: .*expected exactly 20 bytes, got 5"):
        writer.apply([KvSet("a", b"1"), bad])
    assert reader.kv_get("a") is None
    with pytest.raises(StorageError, match=r"batch item 1: got str; expected a WriteOp"):
        writer.apply([KvSet("a", b"1"), "KvSet"])  # type: ignore[list-item]
    assert reader.kv_get("a") is None
    assert writer.apply([]) == []


def test_the_schema_checks_back_up_the_writer(db: NodeDatabase) -> None:
    # Even SQL that bypasses the ops cannot store a malformed address.
    import peewee

    with pytest.raises(peewee.IntegrityError, match="CHECK"):
        run_sql(db, "INSERT INTO tickets VALUES (x'01', ?, 1, 1, 1, x'00', 0, NULL, NULL, NULL)", (FLEET,))


BAD_OPS = [
    (lambda: KvSet("", b"x"), r"KvSet\.key: got ''; expected a non-empty str"),
    (lambda: KvSet("k" * 2000, b"x"), r"KvSet\.key: .*at most 1024 characters"),
    (lambda: KvSet("k", "text"), r"KvSet\.value: got 'text'; expected bytes"),
    (lambda: KvSet("schema_version", b"9"), r"KvSet\.key: .*reserved schema_version"),
    (lambda: KvDelete("schema_version"), r"KvDelete\.key: .*reserved"),
    (
        lambda: TicketUpsert(DEV, FLEET, -1, 1, 1, b"t", 0.0),
        r"TicketUpsert\.epoch: got -1; expected an int from 0",
    ),
    (lambda: TicketUpsert(DEV, FLEET, 1, 2**63, 1, b"t", 0.0), r"TicketUpsert\.total_bytes: .*2\*\*63-1"),
    (lambda: TicketUpsert(DEV, FLEET, 1, True, 1, b"t", 0.0), r"TicketUpsert\.total_bytes: got True"),
    (lambda: TicketUpsert(DEV, FLEET, 1, 1, 1, b"", 0.0), r"TicketUpsert\.ticket: .*non-empty wire encoding"),
    (lambda: TicketUpsert(DEV, FLEET, 1, 1, 1, b"t", math.nan), r"TicketUpsert\.received_at: got nan"),
    (lambda: TicketMarkSubmitted(DEV, FLEET, 1, 1, 0.0, b"tx", accepted=1), r"accepted: got 1"),  # type: ignore[arg-type]
    (lambda: PeerSeen("p", -5), r"PeerSeen\.seen_at: got -5"),
    (lambda: PeerSeen("p", 5, connected=None), r"PeerSeen\.connected: got None"),  # type: ignore[arg-type]
    (
        lambda: RewardPeriod(10, 5, 1.0, 1.0, 1.0),
        r"RewardPeriod\.period_end: got 5; expected a time at or after",
    ),
    (lambda: RewardPeriod(1, 5, math.inf, 1.0, 1.0), r"RewardPeriod\.uptime_score: got inf"),
    (lambda: DhtPut(b"", b"v", SIGNER, 1, 1.0), r"DhtPut\.key: got b''"),
    (lambda: DhtPut(b"k", b"v", b"x" * 65, 1, 1.0), r"DhtPut\.signer: .*exactly 20 bytes, got 65"),
    (
        lambda: CachePut("ns", "k", b"v", "soon"),
        r"CachePut\.expires_at: got 'soon'; expected a finite number",
    ),  # type: ignore[arg-type]
    (lambda: StatsRollup([NodeStatsRow(1, 1, 1, 1, 1)]), r"StatsRollup\.rows: .*expected a tuple"),  # type: ignore[arg-type]
    (lambda: StatsRollup((NodeStatsRow(1, -1, 1, 1, 1),)), r"NodeStatsRow\.connections: got -1"),
]


@pytest.mark.parametrize(("make", "message"), BAD_OPS)
def test_bad_ops_are_refused_with_a_clear_message(make, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StorageError, match=message):
        make()


@given(
    device=st.binary(max_size=40).filter(lambda b: len(b) != 20),
    epoch=st.one_of(
        st.integers(max_value=-1), st.integers(min_value=2**63), st.floats(), st.text(), st.none()
    ),
)
def test_generated_bad_ticket_fields_raise_storage_error_only(device: bytes, epoch: object) -> None:
    with pytest.raises(StorageError, match=r"TicketUpsert\.device"):
        TicketUpsert(device, FLEET, 1, 1, 1, b"t", 0.0)
    with pytest.raises(StorageError, match=r"TicketUpsert\.epoch"):
        TicketUpsert(DEV, FLEET, epoch, 1, 1, b"t", 0.0)  # type: ignore[arg-type]


def test_stats_rollup_latest_and_prune(writer: Writer, reader: Reader) -> None:
    rows = tuple(NodeStatsRow(60 * i, i, 100 * i, 200 * i, 60 * i) for i in range(1, 6))
    assert writer.apply([StatsRollup(rows)]) == [5]
    assert [r.timestamp for r in reader.latest_node_stats(limit=3)] == [300, 240, 180]
    assert [r.timestamp for r in reader.latest_node_stats(since=240)] == [300, 240]
    assert reader.latest_node_stats(limit=1)[0] == rows[-1]
    writer.apply([StatsRollup((NodeStatsRow(300, 9, 9, 9, 9),))])  # same minute replaces
    assert reader.latest_node_stats(limit=1)[0].connections == 9
    assert writer.apply([StatsPrune(before=180)]) == [2]
    assert [r.timestamp for r in reader.latest_node_stats()] == [300, 240, 180]


def test_peer_seen_tracks_history_and_reliability(writer: Writer, reader: Reader) -> None:
    [row] = writer.apply([PeerSeen("0xaa", 100, connected=True)])
    assert (row.first_seen, row.last_seen, row.connection_count, row.reliability_score) == (100, 100, 1, 1.0)
    writer.apply([PeerSeen("0xaa", 200, ok=False), PeerSeen("0xaa", 150, connected=True, ok=False)])
    peer = reader.peer("0xaa")
    assert peer is not None
    assert (peer.first_seen, peer.last_seen, peer.connection_count) == (100, 200, 2)
    assert peer.reliability_score == pytest.approx(0.81)
    writer.apply([PeerSeen("0xbb", 300)])
    assert [p.peer_id for p in reader.peers()] == ["0xbb", "0xaa"]
    assert reader.peer("0xcc") is None


def test_reward_periods(writer: Writer, reader: Reader) -> None:
    writer.apply([RewardPeriod(0, 3600, 0.99, 0.5, 1.25), RewardPeriod(3600, 7200, 1.0, 0.7, 2.0)])
    writer.apply([RewardPeriod(3600, 7200, 1.0, 0.8, 3.0)])
    periods = reader.reward_periods()
    assert [(p.period_start, p.chr_tokens_earned) for p in periods] == [(3600, 3.0), (0, 1.25)]


def test_dht_keeps_the_newer_object(writer: Writer, reader: Reader, clock: Clock) -> None:
    assert writer.apply([DhtPut(b"key", b"v5", SIGNER, 5, 2_000.0)]) == [True]
    assert writer.apply(
        [DhtPut(b"key", b"v4", SIGNER, 4, 9_000.0), DhtPut(b"key", b"v5b", SIGNER, 5, 9_000.0)]
    ) == [
        False,
        False,
    ]
    got = reader.dht_get(b"key", now=clock.now)
    assert got is not None and (got.value, got.version, got.signer) == (b"v5", 5, SIGNER)
    assert writer.apply([DhtPut(b"key", b"v6", SIGNER, 6, 3_000.0)]) == [True]
    assert reader.dht_get(b"key", now=clock.now) == reader.dht_live(now=clock.now)[0]
    assert reader.dht_get(b"key", now=3_000.0) is None  # expired objects are never returned
    clock.now = 3_500.0
    assert writer.apply([DhtPut(b"key", b"old but live", SIGNER, 1, 4_000.0)]) == [True]  # expired one yields
    assert writer.apply([DhtPut(b"gone", b"x", SIGNER, 1, 10.0), DhtPurgeExpired(now=3_500.0)]) == [True, 1]
    assert [o.key for o in reader.dht_live(now=0.0)] == [b"key"]


def test_cache_l2(writer: Writer, reader: Reader) -> None:
    writer.apply([CachePut("block", "latest", b"\x01", 100.0), CachePut("peer", "latest", b"\x02", 50.0)])
    assert reader.cache_get("block", "latest", now=99.9) == b"\x01"
    assert reader.cache_get("block", "latest", now=100.0) is None  # expired is a miss, even before purging
    assert reader.cache_get("peer", "latest", now=0.0) == b"\x02"
    assert writer.apply([CachePurgeExpired(now=60.0)]) == [1]
    assert reader.cache_get("peer", "latest", now=0.0) is None
    assert writer.apply([CacheDelete("block", "latest"), CacheDelete("block", "latest")]) == [True, False]
    assert reader.cache_get("block", "latest", now=0.0) is None


def test_ops_and_results_pickle(writer: Writer) -> None:
    ops: list[WriteOp] = [
        KvSet("k", b"v"),
        KvDelete("k"),
        StatsRollup((NodeStatsRow(1, 2, 3, 4, 5),)),
        StatsPrune(0),
        ticket(3),
        TicketMarkSubmitted(DEV, FLEET, 7, 3, 1.0, b"tx", True),
        PeerSeen("p", 1, True, True),
        RewardPeriod(0, 1, 0.5, 0.5, 0.5),
        DhtPut(b"k", b"v", SIGNER, 1, 1e12),
        DhtPurgeExpired(0.0),
        CachePut("n", "k", b"v", 1e12),
        CacheDelete("n", "k"),
        CachePurgeExpired(0.0),
    ]
    copies = pickle.loads(pickle.dumps(ops))
    assert copies == ops
    results = writer.apply(copies)
    assert pickle.loads(pickle.dumps(results)) == results
    assert results[4].stored and results[5] is True
