"""Benchmarks of the lake and sweeps: syncing to a DuckLake, querying it, a parallel sweep."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb

from grace_core.bench.core import Context, Figure, _messages, _timed, benchmark, figure
from grace_core.db import sql_string


# -- lake and sweeps -----------------------------------------------------------------------------------------------
# ``lake.sync``: events/s of ``ws.lake.sync()`` publishing the benchmark ledger into a new DuckLake (SQLite
# catalog, Parquet data), against copying the same events into another DuckDB file (``INSERT ... SELECT``
# through ATTACH): what the lake format costs over a plain database file.
# ``lake.query_ms``: the median time of one aggregate over the events (count per topic) read from the lake by
# ``open_lake`` (another DuckDB instance, as a reader on another host would), against the same query on the
# workspace's own DuckDB file opened read-only.
# ``sweep.parallel_s``: wall time of a small sweep (4 short simulated runs) on 2 worker processes, against the
# same runs one after the other in-process; the ratio is the speed-up (process start-up included).
@benchmark("lake.sync", figures=["lake.sync", "lake.query_ms"])
def bench_lake(ctx: Context) -> Iterator[Figure]:
    import statistics

    from grace_core.lake import open_lake

    n = ctx.size(100_000, 10_000, minimum=100)
    ws = ctx.workspace("lake-owner")
    path = Path(ws.path)
    ws.publish_many(_messages(n), actor="bench")
    catalog = f"sqlite:{ctx.dir / f'lake-{path.stem}.sqlite'}"
    ws.lake.attach(catalog, ctx.dir / f"lake-{path.stem}-data")
    report = ws.lake.sync()
    events = ws.ledger.head[0]
    peer_file = ctx.dir / f"lake-peer-{path.stem}.duckdb"
    cur = ws.con.cursor()
    cur.execute(f"ATTACH {sql_string(peer_file.as_posix())} AS lake_peer")
    try:
        peer_s, _ = _timed(lambda: cur.execute("CREATE TABLE lake_peer.events AS SELECT * FROM events"))
    finally:
        cur.execute("DETACH lake_peer")
    yield figure("lake.sync", events / report.seconds, "events/s", "duckdb_file.copy", events / peer_s)
    query = "SELECT topic, count(*) AS n FROM events GROUP BY topic ORDER BY topic"
    ws.close()
    with open_lake(catalog) as lake:
        lake.sql(query)
        lake_ms = statistics.median(_timed(lambda: lake.sql(query))[0] for _ in range(7)) * 1e3
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute(query).df()
        file_ms = statistics.median(_timed(lambda: con.execute(query).df())[0] for _ in range(7)) * 1e3
    finally:
        con.close()
    yield figure("lake.query_ms", lake_ms, "ms", "duckdb_file.query", file_ms)


@benchmark("sweep.parallel_s")
def bench_sweep(ctx: Context) -> Iterator[Figure]:
    from grace_core.sweep import SweepConfig, run_sweep

    def config(name: str) -> SweepConfig:
        return SweepConfig.from_mapping(
            {
                "name": name,
                "seeds": [1, 2],
                "hours": ctx.seconds(0.5, 0.1, minimum=0.02),
                "simulate": {"users": 3},
                "params": {"users": [2, 3]},
                "objective": "messages",
                "workdir": str(ctx.dir / f"sweep-{name}"),
            }
        )

    sequential = run_sweep(config("sequential"), backend="serial")
    parallel = run_sweep(config("parallel"), backend="processes", workers=2)
    yield figure("sweep.parallel_s", parallel.seconds, "s", "sweep.sequential_s", sequential.seconds)
