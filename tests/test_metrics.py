"""Metrics: samples recorded as events, counters derived from events, time series and Prometheus text."""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any, ClassVar

import pandas as pd
import pytest

from grace_core import (
    DerivedMetric,
    Event,
    Loop,
    ManualClock,
    MetricsError,
    Scheduler,
    Workspace,
    open_workspace,
)


@pytest.fixture
def ws() -> Iterator[Workspace]:
    w = open_workspace(":memory:", clock=ManualClock(), seed=9)
    yield w
    w.close()


def _row(summary: pd.DataFrame, metric: str, **labels: str) -> pd.Series:
    rows = summary[(summary["metric"] == metric) & (summary["labels"].map(lambda d: d == labels))]
    assert len(rows) == 1, f"{metric} {labels}: {len(rows)} rows"
    return rows.iloc[0]


# -- recording and summary -----------------------------------------------------------------------------------
def test_each_record_is_a_metrics_sampled_event(ws: Workspace) -> None:
    event = ws.metrics.record("queue_depth", 7, labels={"queue": "main"}, actor="monitor")
    assert event.topic == "metrics.sampled"
    assert event.actor == "monitor"
    assert event.payload == {
        "kind": "gauge",
        "samples": [{"name": "queue_depth", "value": 7.0, "labels": {"queue": "main"}}],
    }
    many = ws.metrics.record_many([("cpu", 0.5, {"core": "0"}), ("cpu", 0.7, {"core": "1"})])
    assert len(many.payload["samples"]) == 2
    assert ws.sql("SELECT count(*) AS n FROM metric_samples WHERE event_id = ?", [many.id])["n"][0] == 2


def test_summary_shows_gauges_counters_and_histograms(ws: Workspace) -> None:
    m = ws.metrics
    for v in (3, 9, 4):
        m.record("queue_depth", v, labels={"queue": "main"})
        ws.clock.advance(1)
    m.record("queue_depth", 1, labels={"queue": "side"})
    for v in (2, 3, 5):
        m.record("requests", v, kind="counter", labels={"route": "/chat"})
    for v in (0.1, 0.2, 0.3, 0.4):
        m.record("latency_seconds", v, kind="histogram")
    summary = m.summary()
    assert list(summary.columns) == ["metric", "kind", "labels", "value", "count", "sum", "p50", "p99"]

    main = _row(summary, "queue_depth", queue="main")
    assert (main["kind"], main["value"], main["count"]) == ("gauge", 4.0, 3)  # the last reading
    assert _row(summary, "queue_depth", queue="side")["value"] == 1.0
    requests = _row(summary, "requests", route="/chat")
    assert (requests["kind"], requests["value"], requests["count"]) == ("counter", 10.0, 3)  # the total
    latency = _row(summary, "latency_seconds")
    assert latency["kind"] == "histogram"
    assert latency["count"] == 4
    assert latency["sum"] == pytest.approx(1.0)
    assert latency["value"] == pytest.approx(0.25)  # the mean
    assert latency["p50"] == pytest.approx(0.25)
    assert set(m.names) >= {"queue_depth", "requests", "latency_seconds", "grace_events_total"}


def test_gauge_last_reading_is_the_last_recorded_even_at_one_instant(ws: Workspace) -> None:
    # On a ManualClock that does not move, every reading has the same timestamp; "last" is still ledger order.
    for v in (1, 5, 3, 0.5):
        ws.metrics.record("temperature", v)
    assert _row(ws.metrics.summary(), "temperature")["value"] == 0.5
    assert ws.metrics.series("temperature")["last"].tolist() == [0.5]
    assert re.search(r"^temperature 0\.5$", ws.metrics.prometheus(), re.M)


# -- time series ---------------------------------------------------------------------------------------------
def test_series_buckets_samples_by_time(ws: Workspace) -> None:
    m = ws.metrics
    start = ws.clock.now()
    m.record("temperature", 20, labels={"room": "a"})
    ws.clock.advance(30)
    m.record("temperature", 24, labels={"room": "a"})
    m.record("temperature", 5, labels={"room": "b"})
    m.record("requests", 2, kind="counter")
    ws.clock.advance(60)  # next minute
    m.record("temperature", 21, labels={"room": "a"})
    m.record("requests", 3, kind="counter")
    m.record("requests", 4, kind="counter")
    ws.clock.advance(minutes=2)  # skip a minute
    m.record("requests", 1, kind="counter")

    temp = m.series("temperature")
    assert list(temp.columns) == ["metric", "ts", "label", "last", "min", "max", "mean"]
    assert [(r.ts - start, r.label, r.last, r.min, r.max) for r in temp.itertuples()] == [
        (timedelta(0), '{"room":"a"}', 24.0, 20.0, 24.0),
        (timedelta(0), '{"room":"b"}', 5.0, 5.0, 5.0),
        (timedelta(minutes=1), '{"room":"a"}', 21.0, 21.0, 21.0),
    ]

    requests = m.series("requests")
    assert [r.ts - start for r in requests.itertuples()] == [timedelta(minutes=m) for m in (0, 1, 3)]
    assert requests["count"].tolist() == [2.0, 7.0, 1.0]
    assert requests["total"].tolist() == [2.0, 9.0, 10.0]

    by_30s = m.series("temperature", every="30 seconds")
    assert len(by_30s) == 4  # a@0s, a@30s, b@30s, a@90s
    window = m.series("requests", since=start + timedelta(minutes=1), until=start + timedelta(minutes=2))
    assert window["count"].tolist() == [7.0]


def test_histogram_series_has_counts_and_quantiles(ws: Workspace) -> None:
    for v in range(1, 101):
        ws.metrics.record("latency_ms", v, kind="histogram")
    ws.clock.advance(minutes=1)
    ws.metrics.record("latency_ms", 1000, kind="histogram")
    s = ws.metrics.series("latency_ms")
    assert list(s.columns) == ["metric", "ts", "label", "count", "sum", "mean", "p50", "p95", "p99"]
    first, second = s.iloc[0], s.iloc[1]
    assert (first["count"], first["sum"], first["mean"]) == (100, 5050.0, 50.5)
    assert first["p50"] == pytest.approx(50.5)
    assert first["p95"] == pytest.approx(95.05)
    assert (second["count"], second["p99"]) == (1, 1000.0)


# -- derived metrics -----------------------------------------------------------------------------------------
def test_derived_counters_count_events_by_topic(ws: Workspace) -> None:
    for topic, n in [("chat.message.received", 3), ("job.created", 2)]:
        for _ in range(n):
            ws.publish(topic, actor="tester")
    ws.clock.advance(minutes=1)
    ws.publish("job.created", actor="tester")
    expected = Counter(e.topic for e in ws.ledger.events())
    summary = ws.metrics.summary()
    totals = summary[summary["metric"] == "grace_events_total"]
    assert {d["topic"]: v for d, v in zip(totals["labels"], totals["value"], strict=True)} == expected
    assert expected["job.created"] == 3

    series = ws.metrics.series("grace_events_total")
    tasks = series[series["label"] == "job.created"]
    assert tasks["count"].tolist() == [2, 1]
    assert tasks["total"].tolist() == [2, 3]


def test_defined_metrics_count_and_observe_payload_fields(ws: Workspace) -> None:
    ws.metrics.define(DerivedMetric("jobs_total", "counter", "job.*", "Jobs, by outcome.", label="outcome"))
    ws.metrics.define(
        DerivedMetric(
            "job_seconds",
            "histogram",
            "job.finished",
            "Job durations.",
            value="seconds",
            label="kind",
            buckets=(1, 10, 100),
        )
    )
    for outcome, kind, seconds in [("ok", "a", 0.5), ("ok", "a", 50), ("failed", "b", 5), ("ok", "a", 500)]:
        ws.publish("job.finished", {"outcome": outcome, "kind": kind, "seconds": seconds}, actor="runner")
    summary = ws.metrics.summary()
    assert _row(summary, "jobs_total", outcome="ok")["value"] == 3
    assert _row(summary, "jobs_total", outcome="failed")["value"] == 1
    a = _row(summary, "job_seconds", kind="a")
    assert (a["count"], a["sum"], a["p50"]) == (3, 550.5, 50.0)
    with pytest.raises(MetricsError, match="derived"):
        ws.metrics.record("jobs_total", 1, kind="counter")


class QuietLoop(Loop):
    name: ClassVar[str] = "quiet"
    params: ClassVar[Mapping[str, Any]] = {"interval": 10.0}

    def process(self, events: list[Event], scheduler: Scheduler) -> Mapping[str, Any] | None:
        return None


def test_dead_letters_and_loop_ticks_feed_the_builtin_metrics(ws: Workspace) -> None:
    def broken(event: object) -> None:
        raise RuntimeError("no")

    ws.subscribe("job.*", broken, name="broken_sub")
    ws.publish("job.x", actor="tester")
    for _ in range(10):
        ws.clock.advance(2)
        ws.mesh.pump()
    ws.loops.add(QuietLoop())
    ws.loops.step("quiet")
    ws.publish("job.y", actor="tester")
    ws.loops.step("quiet")
    summary = ws.metrics.summary()
    assert _row(summary, "grace_delivery_failures_total", subscriber="broken_sub")["value"] == 1
    assert _row(summary, "grace_loop_ticks_total", loop="quiet")["value"] == 2
    lag = _row(summary, "grace_loop_lag_events", loop="quiet")
    assert (lag["count"], lag["sum"]) == (2, 0)  # each tick caught up to the head it saw


# -- Prometheus text exposition ------------------------------------------------------------------------------
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text):
        match = _LABEL.match(text, pos)
        assert match, f"bad label syntax at {text[pos:]!r}"
        raw = match.group(2)
        labels[match.group(1)] = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), raw)
        pos = match.end()
    return labels


def _parse_exposition(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """A strict reader of text format 0.0.4: returns {family: type} and the samples, checking as it goes."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: list[tuple[str, dict[str, str], float]] = []
    suffixes = {
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("_sum", "_count", ""),
        "counter": ("",),
        "gauge": ("",),
    }
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"second HELP for {name}"
            assert name not in types, f"HELP for {name} after its TYPE"
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in suffixes, line
            assert name not in types, f"second TYPE for {name}"
            assert not any(s[0] == name for s in samples), f"TYPE for {name} after its samples"
            types[name] = kind
            continue
        assert not line.startswith("#"), f"unexpected comment {line!r}"
        assert line.strip(), "blank line inside the exposition"
        match = _SAMPLE.match(line)
        assert match, f"bad sample line {line!r}"
        name, labels, value = match.group(1), _parse_labels(match.group(2) or ""), match.group(3)
        family = next((f for f, k in types.items() for suf in suffixes[k] if name == f + suf), None)
        assert family is not None, f"sample {name} has no TYPE line before it"
        samples.append((name, labels, float(value)))
    return types, samples


def _exposition_workspace(ws: Workspace) -> None:
    ws.metrics.define(
        DerivedMetric(
            "job_seconds",
            "histogram",
            "job.finished",
            "Job durations.",
            value="seconds",
            label="kind",
            buckets=(0.5, 1, 10, 100),
        )
    )
    for kind, seconds in [("a", 0.2), ("a", 0.7), ("a", 7), ("a", 1000), ("b", 1), ("b", 1)]:
        ws.publish("job.finished", {"kind": kind, "seconds": seconds}, actor="runner")
    ws.metrics.record("queue_depth", 3, labels={"queue": "main"})
    ws.metrics.record("queue_depth", 4.5, labels={"queue": 'say "hi"\nthen\\leave'})
    ws.metrics.record("requests", 2, kind="counter", labels={"route": "/chat"})
    ws.metrics.record("payload_bytes", 100, kind="histogram")
    ws.metrics.record("payload_bytes", 300, kind="histogram")


def test_prometheus_output_is_valid_text_exposition(ws: Workspace) -> None:
    _exposition_workspace(ws)
    text = ws.metrics.prometheus()
    types, samples = _parse_exposition(text)
    assert types["grace_events_total"] == "counter"
    assert types["job_seconds"] == "histogram"
    assert types["queue_depth"] == "gauge"
    assert types["requests"] == "counter"
    assert types["payload_bytes"] == "summary"  # sampled observations carry no buckets
    assert "# HELP job_seconds Job durations." in text.splitlines()
    values = {(n, tuple(sorted(lab.items()))): v for n, lab, v in samples}
    assert values[("grace_events_total", (("topic", "job.finished"),))] == 6
    assert values[("requests", (("route", "/chat"),))] == 2
    assert values[("payload_bytes_sum", ())] == 400
    assert values[("payload_bytes_count", ())] == 2


def test_prometheus_label_values_are_escaped(ws: Workspace) -> None:
    _exposition_workspace(ws)
    text = ws.metrics.prometheus()
    assert 'queue_depth{queue="say \\"hi\\"\\nthen\\\\leave"} 4.5\n' in text
    _, samples = _parse_exposition(text)
    assert ("queue_depth", {"queue": 'say "hi"\nthen\\leave'}, 4.5) in samples  # round-trips exactly


def test_prometheus_histograms_are_cumulative_and_consistent(ws: Workspace) -> None:
    _exposition_workspace(ws)
    _, samples = _parse_exposition(ws.metrics.prometheus())
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    counts: dict[str, float] = {}
    sums: dict[str, float] = {}
    for name, labels, value in samples:
        if not name.startswith("job_seconds"):
            continue
        kind = labels["kind"]
        if name == "job_seconds_bucket":
            le = labels["le"]
            buckets[kind].append((math.inf if le == "+Inf" else float(le), value))
        elif name == "job_seconds_count":
            counts[kind] = value
        else:
            sums[kind] = value
    assert set(buckets) == {"a", "b"}
    for kind, rows in buckets.items():
        les = [le for le, _ in rows]
        assert les == sorted(les)
        assert les[-1] == math.inf
        cumulative = [c for _, c in rows]
        assert cumulative == sorted(cumulative), f"buckets of {kind} are not cumulative: {cumulative}"
        assert cumulative[-1] == counts[kind]
    assert dict(buckets["a"]) == {0.5: 1, 1: 2, 10: 3, 100: 3, math.inf: 4}
    assert dict(buckets["b"]) == {0.5: 0, 1: 2, 10: 2, 100: 2, math.inf: 2}  # le is inclusive
    assert sums == {"a": pytest.approx(1007.9), "b": 2}


def test_prometheus_output_parses_with_the_reference_parser(ws: Workspace) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    _exposition_workspace(ws)
    families = {f.name: f for f in parser.text_string_to_metric_families(ws.metrics.prometheus())}
    assert families["job_seconds"].type == "histogram"
    assert families["queue_depth"].type == "gauge"
    labels = [s.labels["queue"] for s in families["queue_depth"].samples]
    assert labels == ["main", 'say "hi"\nthen\\leave']


# -- errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "kwargs"),
    [
        ("", 1, {}),
        ("1st_metric", 1, {}),
        ("has-dash", 1, {}),
        ("has space", 1, {}),
        ("caf\u00e9", 1, {}),
        ("ok_name", float("nan"), {}),
        ("ok_name", float("inf"), {}),
        ("ok_name", True, {}),
        ("ok_name", "3", {}),
        ("ok_name", 1, {"kind": "meter"}),
        ("ok_name", 1, {"labels": {"bad-label": "x"}}),
        ("ok_name", 1, {"labels": {"__reserved": "x"}}),
        ("ok_name", 1, {"labels": {"0lead": "x"}}),
        ("grace_events_total", 1, {"kind": "counter"}),
    ],
)
def test_bad_samples_raise_metrics_error(ws: Workspace, name: str, value: object, kwargs: dict) -> None:
    head = ws.ledger.head[0]
    with pytest.raises(MetricsError):
        ws.metrics.record(name, value, **kwargs)  # type: ignore[arg-type]
    assert ws.ledger.head[0] == head  # nothing was recorded


def test_record_many_is_all_or_nothing(ws: Workspace) -> None:
    head = ws.ledger.head[0]
    with pytest.raises(MetricsError):
        ws.metrics.record_many([("good", 1.0, {}), ("bad name", 2.0, {})])
    with pytest.raises(MetricsError, match="no samples"):
        ws.metrics.record_many([])
    assert ws.ledger.head[0] == head


def test_query_errors_raise_metrics_error(ws: Workspace) -> None:
    ws.metrics.record("known", 1)
    with pytest.raises(MetricsError, match="no metric named 'unknown'"):
        ws.metrics.series("unknown")
    with pytest.raises(MetricsError, match="interval"):
        ws.metrics.series("known", every="soon")
    with pytest.raises(MetricsError, match="interval"):
        ws.metrics.series("known", every="1 fortnight")
    with pytest.raises(MetricsError, match="gauge"):
        ws.metrics.define(DerivedMetric("g", "gauge", "*", "A gauge cannot be derived."))


def test_a_metric_keeps_its_kind(ws: Workspace) -> None:
    ws.metrics.record("queue_depth", 3)
    head = ws.ledger.head
    with pytest.raises(MetricsError, match="is a gauge"):
        ws.metrics.record("queue_depth", 1, kind="counter")
    assert ws.ledger.head == head
