"""Metrics: counters and histograms derived from events, gauges sampled by engines, over time windows."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from .clock import Clock
from .errors import MetricsError
from .events import Event, canonical_json, is_finite_number
from .times import TS

if TYPE_CHECKING:
    from .ledger import Ledger
    from .mesh import Mesh

__all__ = ["DerivedMetric", "Metrics"]

KINDS = ("counter", "gauge", "histogram")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
DEFAULT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class DerivedMetric:
    """A metric computed from the ledger: events matching ``topic`` counted (counter) or their payload
    field ``value`` observed (histogram), labelled by the payload field ``label`` (or the topic)."""

    name: str
    kind: str
    topic: str
    help: str
    value: str | None = None
    label: str | None = None
    buckets: tuple[float, ...] = DEFAULT_BUCKETS

    def label_sql(self) -> str:
        return "topic" if self.label is None else f"payload->>'$.{self.label}'"

    def value_sql(self) -> str:
        return "1.0" if self.value is None else f"TRY_CAST(payload->>'$.{self.value}' AS DOUBLE)"


BUILTIN = (
    DerivedMetric("grace_events_total", "counter", "*", "Events appended to the ledger, by topic."),
    DerivedMetric(
        "grace_delivery_failures_total",
        "counter",
        "mesh.delivery_failed",
        "Deliveries that became dead letters, by subscriber.",
        label="subscriber",
    ),
    DerivedMetric("grace_loop_ticks_total", "counter", "loop.ticked", "Loop ticks, by loop.", label="loop"),
    DerivedMetric(
        "grace_loop_lag_events",
        "histogram",
        "loop.ticked",
        "Events behind the ledger head at the end of each tick, by loop.",
        value="lag",
        label="loop",
        buckets=(0, 1, 10, 100, 1_000, 10_000, 100_000),
    ),
)


class Metrics:
    """Prometheus-typed metrics over the workspace, queryable as DataFrames."""

    def __init__(self, ledger: Ledger, mesh: Mesh, clock: Clock) -> None:
        self._ledger = ledger
        self._mesh = mesh
        self._clock = clock
        self._derived: dict[str, DerivedMetric] = {m.name: m for m in BUILTIN}

    def define(self, metric: DerivedMetric) -> DerivedMetric:
        """Add a metric derived from events (engines call this for their own, e.g. durations)."""
        if metric.kind not in ("counter", "histogram"):
            raise MetricsError("a derived metric is a counter or a histogram; gauges are recorded")
        self._derived[metric.name] = metric
        return metric

    # -- recording -------------------------------------------------------------------------------------------
    def record(
        self,
        name: str,
        value: float,
        *,
        kind: str = "gauge",
        labels: Mapping[str, str] | None = None,
        actor: str = "metrics",
    ) -> Event:
        """Record one sample (a gauge reading, a counter increment or a histogram observation) as an event."""
        return self.record_many([(name, value, labels or {})], kind=kind, actor=actor)

    def record_many(
        self,
        samples: Iterable[tuple[str, float, Mapping[str, str]]],
        *,
        kind: str = "gauge",
        actor: str = "metrics",
    ) -> Event:
        """Record several samples of one kind in a single ``metrics.sampled`` event."""
        if kind not in KINDS:
            raise MetricsError(f"kind is one of {', '.join(KINDS)}, not {kind!r}")
        rows: list[dict[str, Any]] = []
        for name, value, labels in samples:
            if not isinstance(name, str) or not _METRIC_NAME.match(name):
                raise MetricsError(
                    f"bad metric name {name!r}: ASCII letters, digits, '_' and ':', "
                    "not starting with a digit (a Prometheus name)"
                )
            for key in labels:
                if not isinstance(key, str) or not _LABEL_NAME.match(key) or key.startswith("__"):
                    raise MetricsError(
                        f"bad label name {key!r} on {name}: ASCII letters, digits and "
                        "'_', not starting with a digit or '__'"
                    )
            if not is_finite_number(value):
                raise MetricsError(f"metric {name} needs a finite number, not {value!r}")
            if name in self._derived:
                raise MetricsError(f"{name} is derived from events; it cannot be recorded")
            rows.append(
                {"name": name, "value": float(value), "labels": {str(k): str(v) for k, v in labels.items()}}
            )
        if not rows:
            raise MetricsError("no samples to record")
        names = sorted({r["name"] for r in rows})
        clash = (
            self._ledger.reader()
            .execute(
                "SELECT name, any_value(kind) FROM metric_samples "
                "WHERE list_contains(?, name) AND kind <> ? GROUP BY name",
                [names, kind],
            )
            .fetchone()
        )
        if clash is not None:
            raise MetricsError(f"metric {clash[0]} is a {clash[1]}; it cannot also be recorded as a {kind}")
        return self._mesh.publish("metrics.sampled", {"kind": kind, "samples": rows}, actor=actor)

    # -- querying --------------------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        sampled = self._ledger.reader().execute("SELECT DISTINCT name FROM metric_samples").fetchall()
        return sorted(set(self._derived) | {r[0] for r in sampled})

    def series(
        self,
        name: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        every: str = "1 minute",
    ) -> pd.DataFrame:
        """A metric over time, one row per time bucket and label set.

        Counters give ``count`` (in the bucket) and ``total`` (running); gauges the ``last``, ``min``, ``max``
        and ``mean`` reading; histograms ``count``, ``sum``, ``mean``, ``p50``, ``p95``, ``p99``.
        """
        bucket = f"time_bucket(INTERVAL '{_interval(every)}', ts)"
        where, params = _window(since, until)
        if name in self._derived:
            m = self._derived[name]
            base = (
                f"SELECT ts, {m.label_sql()} AS label, {m.value_sql()} AS value, seq AS ord FROM events "
                f"WHERE topic GLOB ? {where}"
            )
            params = [m.topic, *params]
            kind = m.kind
        else:
            kind = self._sampled_kind(name)
            # rowid is ledger order (the table is append-only, filled in commit order): it breaks ties
            # between readings at one instant, which is every reading on a ManualClock that did not move.
            base = (
                f"SELECT ts, labels AS label, value, rowid AS ord FROM metric_samples WHERE name = ? {where}"
            )
            params = [name, *params]
        if kind == "counter":
            agg = "count(*) AS count" if name in self._derived else "sum(value) AS count"
            sql = f"SELECT {bucket} AS ts, label, {agg} FROM ({base}) GROUP BY ALL ORDER BY ts, label"
            df = self._ledger.reader().execute(sql, params).df()
            df["total"] = df.groupby("label", dropna=False)["count"].cumsum()
        elif kind == "gauge":
            sql = (
                f"SELECT {bucket} AS ts, label, arg_max(value, ord) AS last, min(value) AS min, "
                f"max(value) AS max, avg(value) AS mean FROM ({base}) GROUP BY ALL ORDER BY ts, label"
            )
            df = self._ledger.reader().execute(sql, params).df()
        else:
            sql = (
                f"SELECT {bucket} AS ts, label, count(value) AS count, sum(value) AS sum, avg(value) AS mean, "
                f"quantile_cont(value, 0.5) AS p50, quantile_cont(value, 0.95) AS p95, "
                f"quantile_cont(value, 0.99) AS p99 FROM ({base}) WHERE value IS NOT NULL "
                f"GROUP BY ALL ORDER BY ts, label"
            )
            df = self._ledger.reader().execute(sql, params).df()
        df.insert(0, "metric", name)
        return df

    def summary(self, *, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
        """Every metric as it stands: counters' totals, gauges' last reading, histograms' count and quantiles."""
        rows: list[dict[str, Any]] = []
        where, params = _window(since, until)
        cur = self._ledger.reader()
        for m in self._derived.values():
            sql = (
                f"SELECT label, count(value), sum(value), quantile_cont(value, 0.5), quantile_cont(value, 0.99) "
                f"FROM (SELECT {m.label_sql()} AS label, {m.value_sql()} AS value FROM events "
                f"WHERE topic GLOB ? {where}) WHERE value IS NOT NULL GROUP BY ALL ORDER BY label"
            )
            for label, count, total, p50, p99 in cur.execute(sql, [m.topic, *params]).fetchall():
                row = {"metric": m.name, "kind": m.kind, "labels": _labels(m, label), "count": int(count)}
                row.update(
                    {"value": float(count)}
                    if m.kind == "counter"
                    else {"value": total / count, "sum": total, "p50": p50, "p99": p99}
                )
                rows.append(row)
        sql = (
            f"SELECT name, any_value(kind), labels, count(*), sum(value), arg_max(value, rowid), "
            f"quantile_cont(value, 0.5), quantile_cont(value, 0.99) FROM metric_samples WHERE true {where} "
            f"GROUP BY name, labels ORDER BY name, labels"
        )
        for name, kind, labels, count, total, last, p50, p99 in cur.execute(sql, params).fetchall():
            row = {"metric": name, "kind": kind, "labels": json.loads(labels), "count": int(count)}
            if kind == "counter":
                row["value"] = total
            elif kind == "gauge":
                row["value"] = last
            else:
                row.update({"value": total / count, "sum": total, "p50": p50, "p99": p99})
            rows.append(row)
        return pd.DataFrame(rows, columns=["metric", "kind", "labels", "value", "count", "sum", "p50", "p99"])

    def prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4) of every metric."""
        lines: list[str] = []
        cur = self._ledger.reader()
        for m in self._derived.values():
            lines += [f"# HELP {m.name} {m.help}", f"# TYPE {m.name} {m.kind}"]
            src = f"SELECT {m.label_sql()} AS label, {m.value_sql()} AS value FROM events WHERE topic GLOB ?"
            key = "topic" if m.label is None else m.label
            if m.kind == "counter":
                for label, n in cur.execute(
                    f"SELECT label, count(*) FROM ({src}) GROUP BY 1 ORDER BY 1", [m.topic]
                ).fetchall():
                    lines.append(f"{m.name}{_prom_labels({key: label})} {n}")
                continue
            cases = ", ".join(f"count(*) FILTER (WHERE value <= {b})" for b in m.buckets)
            sql = (
                f"SELECT label, {cases}, count(*), sum(value) FROM ({src}) WHERE value IS NOT NULL "
                "GROUP BY 1 ORDER BY 1"
            )
            for row in cur.execute(sql, [m.topic]).fetchall():
                label, counts, n, total = row[0], row[1:-2], row[-2], row[-1]
                for b, c in zip(m.buckets, counts, strict=True):
                    lines.append(f"{m.name}_bucket{_prom_labels({key: label, 'le': _num(b)})} {c}")
                lines.append(f"{m.name}_bucket{_prom_labels({key: label, 'le': '+Inf'})} {n}")
                lines.append(f"{m.name}_sum{_prom_labels({key: label})} {_num(total)}")
                lines.append(f"{m.name}_count{_prom_labels({key: label})} {n}")
        sql = (
            "SELECT name, any_value(kind), labels, count(*), sum(value), arg_max(value, rowid) "
            "FROM metric_samples GROUP BY name, labels ORDER BY name, labels"
        )
        typed: set[str] = set()
        for name, kind, labels, n, total, last in cur.execute(sql).fetchall():
            prom_kind = "summary" if kind == "histogram" else kind
            if name not in typed:
                lines.append(f"# TYPE {name} {prom_kind}")
                typed.add(name)
            lab = json.loads(labels)
            if kind == "gauge":
                lines.append(f"{name}{_prom_labels(lab)} {_num(last)}")
            elif kind == "counter":
                lines.append(f"{name}{_prom_labels(lab)} {_num(total)}")
            else:
                lines.append(f"{name}_sum{_prom_labels(lab)} {_num(total)}")
                lines.append(f"{name}_count{_prom_labels(lab)} {n}")
        return "\n".join(lines) + "\n"

    def _sampled_kind(self, name: str) -> str:
        row = (
            self._ledger.reader()
            .execute("SELECT any_value(kind) FROM metric_samples WHERE name = ?", [name])
            .fetchone()
        )
        if row is None or row[0] is None:
            known = ", ".join(self.names) or "none yet"
            raise MetricsError(f"no metric named {name!r}; known: {known}")
        return str(row[0])


def _labels(m: DerivedMetric, label: Any) -> dict[str, str]:
    return {("topic" if m.label is None else m.label): "" if label is None else str(label)}


def _interval(every: str) -> str:
    parts = every.strip().split()
    ok = (
        len(parts) == 2
        and parts[0].isdigit()
        and parts[1].rstrip("s") in {"second", "minute", "hour", "day", "week"}
    )
    if not ok:
        raise MetricsError(f"bad interval {every!r}: use e.g. '10 seconds', '1 minute', '1 hour'")
    return every


def _window(since: datetime | None, until: datetime | None) -> tuple[str, list[Any]]:
    where, params = "", []
    if since is not None:
        where += " AND ts >= ?"
        params.append(since)
    if until is not None:
        where += " AND ts < ?"
        params.append(until)
    return where, params


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _prom_labels(labels: Mapping[str, Any]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape("" if v is None else str(v))}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _num(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def apply_metric_samples(con: Any, events: list[Event]) -> None:
    """Projection: one ``metric_samples`` row per recorded sample."""
    rows = []
    for e in events:
        kind = e.payload["kind"]
        for s in e.payload["samples"]:
            rows.append((e.ts_us, s["name"], kind, canonical_json(s["labels"]), s["value"], e.id))
    if rows:
        con.executemany(f"INSERT INTO metric_samples VALUES ({TS}, ?, ?, ?, ?, ?)", rows)
