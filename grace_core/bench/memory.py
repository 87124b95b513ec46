"""Benchmarks of memory search: BM25 top-10 latency, the index build, search right after a write."""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from typing import Any

import duckdb

from grace_core.bench.core import Context, Figure, Goal, _percentile, _timed, benchmark, figure

# -- memory search -------------------------------------------------------------------------------------------
# ``memory.search_p50_ms`` / ``_p99_ms``: ``ws.memory.search(query)`` (BM25 over the fts extension's index,
# top 10, snippets included) over 100,000 artifacts (quick: 10,000) of generated prose, one and two-word
# queries drawn from the vocabulary (common and rare words alike), the index already built. The peer is the
# scan a workspace without an index would do: ``ILIKE '%word%'`` over the same artifacts' current content in
# the workspace's own DuckDB tables, LIMIT 10, unranked. ``memory.index_build_s`` is the lazy rebuild the
# first search pays once, against copying the same rows into a fresh DuckDB table.
# ``memory.search_after_write_p99_ms``: a write (``ws.memory.write``, a new or an updated artifact) then at once
# the same query mix: the search absorbs the change into its delta (scored with the corpus statistics a
# rebuild would have) instead of rebuilding. The peer is what that search cost before: a full rebuild first.
# Goal: top-10 in <= 50 ms (p50), and <= 50 ms (p99) right after a write.
GOALS = (  # beside the benchmark below
    Goal("memory.search_p50_ms", 50, text="memory search top-10 <= 50 ms (p50, 100,000 artifacts)"),
    Goal(
        "memory.search_after_write_p99_ms",
        50,
        text="memory search top-10 right after a write <= 50 ms (p99, 100,000 artifacts)",
    ),
)

_MEMORY_WORDS = (  # noqa: SIM905 - a paragraph of words reads better than a list of 58 strings
    "ledger mesh causal loop metric policy hunter memory search index version folder artifact tag owner "
    "alpha beta gamma delta kappa sigma omega zeta theta lambda notes plan report draft review design budget "
    "deploy release config prompt model dataset training evaluation accuracy latency throughput network "
    "sandbox approval audit secret mask replay snapshot checkpoint proof merkle hash stream cursor backlog"
).split()


def memory_corpus(n: int, *, seed: int = 0) -> list[Any]:
    """``n`` ``memory.item.created`` messages of generated prose (Zipf-like word frequencies)."""
    from grace_core.mesh import Message

    rng = random.Random(seed)  # noqa: S311 - generated text, not secrets
    weights = [1 / (i + 1) for i in range(len(_MEMORY_WORDS))]
    out = []
    for i in range(n):
        words = rng.choices(_MEMORY_WORDS, weights, k=rng.randint(20, 120))
        words.append(f"item{i}")  # one unique word per artifact: rare terms exist too
        path = f"/bench/{_MEMORY_WORDS[i % 7]}/{i // 1000:03d}/{i:06d}.md"
        out.append(
            Message(
                "memory.item.created",
                {
                    "path": path,
                    "content": " ".join(words),
                    "content_type": "text/markdown",
                    "tags": [_MEMORY_WORDS[i % 5]],
                    "version": 1,
                    "reason": "",
                },
                f"memory:{path}",
            )
        )
    return out


@benchmark(
    "memory.search",
    figures=[
        "memory.search_p50_ms",
        "memory.search_p99_ms",
        "memory.index_build_s",
        "memory.search_after_write_p99_ms",
    ],
    goals=GOALS,
)
def bench_memory_search(ctx: Context) -> Iterator[Figure]:
    """Full-text search over a large memory: latency percentiles against an unindexed ILIKE scan."""
    n = ctx.size(100_000, 10_000, minimum=100)
    ws = ctx.workspace("memory")
    corpus = memory_corpus(n)
    for start in range(0, n, 10_000):
        ws.publish_many(corpus[start : start + 10_000], actor="bench")
    build_s, _ = _timed(lambda: ws.memory.search("ledger"))
    rng = random.Random(2)  # noqa: S311 - which queries to run
    queries = [
        " ".join(rng.sample(_MEMORY_WORDS, rng.choice([1, 2]))) if i % 4 else f"item{rng.randrange(n)}"
        for i in range(ctx.size(200, 100, minimum=10))
    ]
    ws.memory.search(queries[0])  # warm up
    ours = sorted(_timed(functools.partial(ws.memory.search, q))[0] for q in queries)

    reader = ws.ledger.reader()
    scan = (
        "SELECT i.path FROM memory_items i JOIN memory_versions v ON v.path = i.path AND v.version = i.version "
        "WHERE NOT i.deleted AND v.content ILIKE ? LIMIT 10"
    )

    def peer_once(q: str) -> None:
        reader.execute(scan, [f"%{q.split()[0]}%"]).fetchall()

    peer_once(queries[0])
    peer = sorted(_timed(functools.partial(peer_once, q))[0] for q in queries)
    for p in (50, 99):
        yield figure(
            f"memory.search_p{p}_ms",
            _percentile(ours, p) * 1e3,
            "ms",
            "duckdb.ilike_scan",
            _percentile(peer, p) * 1e3,
        )

    copy = duckdb.connect(":memory:")
    ctx.on_close(copy.close)
    everything = scan.replace("i.path FROM", "i.path, v.content FROM").replace(" LIMIT 10", "")
    copy.register("src", reader.execute(everything, ["%"]).arrow())
    copy_s, _ = _timed(lambda: copy.execute("CREATE TABLE docs AS SELECT * FROM src"))
    yield figure("memory.index_build_s", build_s, "s", "duckdb.copy_table", copy_s)

    after = []
    for i, q in enumerate(queries):
        target = corpus[rng.randrange(n)].payload["path"] if i % 2 else f"/bench/written/{i}.md"
        ws.memory.write(target, f"{q} written {i} merkle ledger", actor="system", tags=["written"])
        after.append(_timed(functools.partial(ws.memory.search, q))[0])
    after.sort()
    rebuild_s, _ = _timed(ws.memory.reindex)  # the peer: rebuild, then the same search
    rebuilt = rebuild_s + _percentile(ours, 50)
    yield figure(
        "memory.search_after_write_p99_ms", _percentile(after, 99) * 1e3, "ms", "full_rebuild", rebuilt * 1e3
    )
