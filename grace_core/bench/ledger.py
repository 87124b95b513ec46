"""Benchmarks of the ledger: appending and verifying events."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator

from grace_core.bench.core import (
    REPEATS,
    Context,
    Figure,
    Goal,
    _best_rate,
    _messages,
    _open,
    _peer_arrow_insert,
    _peer_columns,
    _remove,
    _timed,
    benchmark,
    figure,
)
from grace_core.errors import BenchError


@benchmark("ledger.append", goals=[Goal("ledger.append", 100_000, text="append >= 100,000 events/s")])
def bench_append(ctx: Context) -> Iterator[Figure]:
    """``publish_many`` of prebuilt messages into a fresh file workspace: validated, chained, durable.

    Goal: >= 100,000 events/s. Best of 3 runs, each into a new file; the last ledger is kept for the
    benchmarks that read one.
    """
    n = ctx.ledger_size
    messages = _messages(n)
    ours: list[float] = []
    peer: list[float] = []
    for _ in range(REPEATS):
        ws = _open(ctx.path("append"))
        seconds, events = _timed(functools.partial(ws.publish_many, messages, actor="bench"))
        ours.append(seconds)
        ctx.set_ledger(ws)
        peer_path = ctx.path("peer-append")
        peer.append(_peer_arrow_insert(peer_path, _peer_columns(events)))
        _remove(peer_path)
        del events
    yield figure("ledger.append", _best_rate(n, ours), "events/s", "duckdb.arrow_insert", _best_rate(n, peer))


@benchmark(
    "ledger.verify",
    goals=[
        Goal("ledger.verify", 1_000_000, text="verify >= 1,000,000 events/s"),
        Goal("ledger.verify", 0.5, on="ratio", text="verify >= 50% of the single-threaded hashing limit"),
    ],
)
def bench_verify(ctx: Context) -> Iterator[Figure]:
    """``Workspace.verify()`` over the benchmark ledger, every link recomputed from the stored columns.

    Goals: >= 1,000,000 events/s and >= 50% of single-threaded hashing (ratio >= 0.5). Verify rebuilds each
    record and checks each link in DuckDB, in parallel across cores, so it can beat the Python hashing loop.
    """
    ws = ctx.ledger()
    ours: list[float] = []
    size = 0
    for _ in range(REPEATS):
        seconds, report = _timed(ws.verify)
        if not report.ok:
            raise BenchError(f"the benchmark ledger does not verify: {report}")
        size = report.size
        ours.append(seconds)
    # The peer hashes exactly what verify hashes: prev_hash || canonical record, one event at a time.
    blobs = [
        prev + rec
        for batch in ws.ledger.records()
        for rec, prev in zip(batch.column(1).to_pylist(), batch.column(2).to_pylist(), strict=True)
    ]
    sha256 = hashlib.sha256

    def hash_all() -> None:
        for b in blobs:
            sha256(b).digest()

    peer = [_timed(hash_all)[0] for _ in range(REPEATS)]
    yield figure(
        "ledger.verify", _best_rate(size, ours), "events/s", "hashlib.sha256", _best_rate(len(blobs), peer)
    )
