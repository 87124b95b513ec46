"""Benchmarks of hunter: scanning throughput and recall against detect-secrets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from grace_core.bench.core import REPEATS, Context, Figure, Goal, _timed, benchmark, figure
from grace_core.errors import BenchError

# -- hunter ----------------------------------------------------------------------------------------------------
# ``hunter.scan``: MB/s of the default pack's scanner over a seeded corpus of code, configuration, logs and
# prose with planted fake secrets (grace_core/hunter/corpus.py; about one line in a hundred holds one), read
# from its file and scanned as a whole (target "file"), against detect-secrets with all its plugins and
# default filters (``default_settings()``, ``SecretsCollection.scan_file``) on the same file, in-process.
# ``hunter.recall``: the share of planted secrets found (a finding of the expected rule over the secret's
# span), for the kinds both tools cover; detect-secrets' recall is measured with its ad-hoc ``scan_line`` on
# every line holding a planted secret, so its per-file merging of equal values does not count against it
# (a reported value that overlaps the planted one counts as found).
# Goals: >= 100x detect-secrets' throughput, and at least its recall.
GOALS = (  # beside the benchmark below
    Goal("hunter.scan", 100, on="ratio", text="Hunter scans >= 100x faster than detect-secrets"),
    Goal("hunter.recall", 1.0, on="ratio", text="Hunter's recall >= detect-secrets' on the shared kinds"),
)


def _overlapping(spans: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """Whether any of ``spans`` (sorted by start) overlaps ``[start, end)``."""
    import bisect

    i = bisect.bisect_left(spans, (end, -1))
    return any(s < end and start < e for s, e in spans[max(0, i - 64) : i])


@benchmark("hunter.scan", figures=["hunter.scan", "hunter.recall"], goals=GOALS)
def bench_hunter(ctx: Context) -> Iterator[Figure]:
    """Hunter's default pack against detect-secrets: throughput on one corpus file, recall on its secrets."""
    try:
        from detect_secrets.core.scan import scan_line
        from detect_secrets.core.secrets_collection import SecretsCollection
        from detect_secrets.settings import default_settings
    except ImportError as exc:  # the peer is a bench extra
        raise BenchError(
            "hunter.scan measures against detect-secrets: pip install 'grace-workbench[bench]'"
        ) from exc
    from grace_core.hunter import default_scanner
    from grace_core.hunter.corpus import make_corpus

    corpus = make_corpus(ctx.size(1_000_000, 200_000, minimum=20_000), seed=7)
    path = ctx.dir / "hunter-corpus.txt"
    path.write_text(corpus.text, encoding="utf-8")
    megabytes = path.stat().st_size / 1e6
    scanner = default_scanner()
    scanner.scan(corpus.text[:10_000], target="file")  # warm up: compiles nothing, touches every code path

    def ours_once() -> list[Any]:
        return scanner.scan(path.read_text(encoding="utf-8"), target="file")

    runs = [_timed(ours_once) for _ in range(REPEATS + 2)]  # a scan is short: a few more runs cost little
    findings = runs[0][1]

    def peer_once() -> None:
        with default_settings():
            SecretsCollection().scan_file(str(path))

    peer_seconds = _timed(peer_once)[0]  # one run: it is two orders of magnitude slower
    yield figure(
        "hunter.scan", megabytes / min(s for s, _ in runs), "MB/s", "detect-secrets", megabytes / peer_seconds
    )

    spans_by_rule: dict[str, list[tuple[int, int]]] = {}
    for f in findings:
        spans_by_rule.setdefault(f.rule, []).append((f.start, f.end))
    ours_found = sum(_overlapping(spans_by_rule.get(p.kind, []), p.start, p.end) for p in corpus.planted)
    text = corpus.text
    peer_found = 0
    with default_settings():
        for p in corpus.planted:
            first = text.rfind("\n", 0, p.start) + 1
            last = text.find("\n", p.end)
            lines = text[first : last if last >= 0 else len(text)].split("\n")
            values = [s.secret_value or "" for line in lines for s in scan_line(line)]
            peer_found += any(v and (v in p.value or p.value in v) for v in values)
    total = len(corpus.planted)
    yield figure("hunter.recall", ours_found / total, "recall", "detect-secrets", max(peer_found, 1) / total)


# ``hunter.worst_case_ms``: the slowest of Hunter's scans of inputs made to be slow (the default pack plus an
# added ``(a+)+$`` rule): 180 KB of near-misses of code-destructive-rm ("rm -" repeated), a 20,000-character chat
# text of "a" ending in "b", a 1 MB base64 blob and 180 KB of "../". Python's backtracking ``re`` took minutes
# on the first two; the peer is the goal itself (1 s).
WORST_CASE_GOALS = (Goal("hunter.worst_case_ms", 1000, text="a worst-case scan takes <= 1 s"),)


@benchmark("hunter.worst_case", figures=["hunter.worst_case_ms"], goals=WORST_CASE_GOALS)
def bench_hunter_worst_case(ctx: Context) -> Iterator[Figure]:
    """Hunter's scan time on worst-case inputs (RE2 runs in linear time, whatever the rule)."""
    import functools

    from grace_core.hunter import default_pack
    from grace_core.hunter.rules import rule_from_dict
    from grace_core.hunter.scanner import Scanner

    nested = rule_from_dict(
        {"id": "nested-quantifier", "description": "an admin's (a+)+$", "severity": "low", "targets": "all",
         "regex": "(a+)+$", "examples": {"positive": ["aaa"], "negative": ["b"]}}
    )  # fmt: skip
    scanner = Scanner([*(r for r in default_pack().rules if r.enabled), nested])
    inputs = [("rm -" * 45_000, "code"), ("a" * 19_999 + "b", "chat"), ("QUJD" * 250_000, "file")]
    inputs.append(("../" * 60_000, "file"))
    worst = max(
        min(_timed(functools.partial(scanner.scan, text, target=target))[0] for _ in range(REPEATS))
        for text, target in inputs
    )
    yield figure("hunter.worst_case_ms", worst * 1e3, "ms", "goal", 1000.0)
