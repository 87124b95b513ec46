"""Benchmarks of the trigger mesh: publish-to-durable latency under concurrent publishers."""

from __future__ import annotations

import gc
import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator

from grace_core.bench.core import (
    PUBLISHERS,
    Context,
    Figure,
    Goal,
    _open,
    _peer_connection,
    _percentile,
    benchmark,
    figure,
)
from grace_core.times import TS, to_us


def _publishers(deadline_s: float, publish_one: Callable[[int, int], None]) -> tuple[list[float], float]:
    """``PUBLISHERS`` threads call ``publish_one(thread, i)`` until the deadline: (latencies, elapsed)."""
    latencies: list[list[float]] = [[] for _ in range(PUBLISHERS)]
    barrier = threading.Barrier(PUBLISHERS + 1)
    stop_at = [0.0]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        out = latencies[k]
        clock = time.perf_counter
        barrier.wait()
        try:
            for i in itertools.count():
                started = clock()
                if started >= stop_at[0]:
                    return
                publish_one(k, i)
                out.append(clock() - started)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the caller below, not lost in a thread
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(k,), name=f"bench-publisher-{k}") for k in range(PUBLISHERS)
    ]
    for t in threads:
        t.start()
    gc.collect()
    started = time.perf_counter()
    stop_at[0] = started + deadline_s
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sorted(x for per in latencies for x in per), elapsed


@benchmark(
    "mesh.publish",
    figures=[
        "mesh.publish_to_durable_p50_ms",
        "mesh.publish_to_durable_p99_ms",
        "mesh.publish_concurrent",
    ],
    goals=[Goal("mesh.publish_to_durable_p99_ms", 20, text="p99 publish-to-durable <= 20 ms")],
)
def bench_mesh_publish(ctx: Context) -> Iterator[Figure]:
    """Publish-to-durable latency: 4 threads publishing one event at a time on a live file workspace.

    Goal: p99 <= 20 ms. Concurrent publishers share DuckDB transactions (group commit); the peer commits
    one transaction per row.
    """
    duration = ctx.seconds(2.0, 0.5)
    ws = _open(ctx.path("mesh"))
    try:
        for i in range(20):  # warm up: first statements prepare plans and grow the file
            ws.publish("bench.warmup", {"i": i}, actor="bench")

        def ours_one(k: int, i: int) -> None:
            ws.publish("bench.tick", {"i": i, "thread": k}, actor=f"bench-{k}")

        ours, ours_elapsed = _publishers(duration, ours_one)
    finally:
        ws.close()

    con = _peer_connection(ctx.path("peer-mesh"))
    try:
        cursors = [con.cursor() for _ in range(PUBLISHERS)]
        seqs = itertools.count(1)
        zero, digest = bytes(32), hashlib.sha256(b"bench").digest()
        sql = f"INSERT INTO rows VALUES (?, ?, {TS}, ?, ?, ?, ?, ?, ?, ?, ?)"

        def peer_one(k: int, i: int) -> None:
            seq = next(seqs)
            row_id = f"{seq:032x}"
            cursors[k].execute(
                sql,
                [
                    seq,
                    row_id,
                    to_us(time.time()),
                    "bench.tick",
                    f"bench-{k}",
                    None,
                    f'{{"i":{i},"thread":{k}}}',
                    None,
                    row_id,
                    zero,
                    digest,
                ],
            )

        for i in range(20):
            peer_one(0, i)
        peer, peer_elapsed = _publishers(duration, peer_one)
    finally:
        con.close()
    peer_name = "duckdb.insert_commit"
    for p in (50, 99):
        yield figure(
            f"mesh.publish_to_durable_p{p}_ms",
            _percentile(ours, p) * 1e3,
            "ms",
            peer_name,
            _percentile(peer, p) * 1e3,
        )
    yield figure(
        "mesh.publish_concurrent", len(ours) / ours_elapsed, "events/s", peer_name, len(peer) / peer_elapsed
    )
