"""The metrics anomaly detector: robust z-scores over trailing windows, judged by an isolation forest.

Every metric series (a column of a frame indexed by time: events/s, error rate, alert rate, latency, ...) is
compared with its own recent past: the trailing median and inter-quartile range over ``window`` buckets give a
robust z-score of each reading. An isolation forest, fitted on the z-scores of every metric of the training
series, scores how unusual each reading is; a bucket's score is its most unusual metric's, and a bucket is an
anomaly when its score passes the threshold fitted on the training data: the one that maximises F1 on the
training labels when the data is labelled, else the ``1 - contamination`` quantile of the training scores. The
features are relative to each series' own past, so one fitted detector scores any metric, under any name.

``make_metric_frame(n, seed)`` makes labelled training and evaluation data: four seeded metric series with a
daily rhythm and noise, and anomalies planted in ``anomaly_rate`` of the buckets (error-rate spikes, traffic
drops and surges, alert bursts, latency spikes), labelled in column ``anomaly`` with their ``cause``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import pandas as pd

from grace_core.errors import ModelError

from .common import best_f1_threshold, binary_metrics, chronological_split

__all__ = ["LABEL_COLUMNS", "AnomalyDetector", "AnomalyTrainer", "make_metric_frame"]

LABEL_COLUMNS = ("anomaly", "cause")
_CLIP = 50.0
_START = datetime(2026, 1, 1, tzinfo=UTC)


def make_metric_frame(
    n: int = 1440, *, seed: int = 0, anomaly_rate: float = 0.02, start: datetime = _START
) -> pd.DataFrame:
    """``n`` one-minute buckets of four metrics with planted, labelled anomalies (index: ``ts``)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    day = np.sin(2 * np.pi * t / 1440.0)
    events = 50 + 20 * day + rng.normal(0, 3, n)
    errors = np.clip(0.01 + 0.004 * day + rng.normal(0, 0.002, n), 0, None)
    alerts = rng.poisson(0.3, n).astype(float)
    latency = 120 + 15 * day + rng.gamma(4.0, 3.0, n)
    anomaly = np.zeros(n, dtype=int)
    cause = np.array([""] * n, dtype=object)
    planted = 0
    target = int(n * anomaly_rate)
    warmup = min(60, n // 4)  # the detector needs some past to judge a bucket by
    while planted < target:
        where = int(rng.integers(warmup, n))
        length = int(rng.integers(1, 4))
        span = slice(where, min(n, where + length))
        if anomaly[span].any():
            continue
        kind = ["error_spike", "traffic_drop", "traffic_surge", "alert_burst", "latency_spike"][
            int(rng.integers(0, 5))
        ]
        if kind == "error_spike":
            errors[span] += rng.uniform(0.05, 0.3)
        elif kind == "traffic_drop":
            events[span] *= rng.uniform(0.0, 0.3)
        elif kind == "traffic_surge":
            events[span] *= rng.uniform(2.5, 5.0)
        elif kind == "alert_burst":
            alerts[span] += rng.integers(6, 20)
        else:
            latency[span] += rng.uniform(400, 2000)
        anomaly[span] = 1
        cause[span] = kind
        planted += span.stop - span.start
    index = pd.date_range(start, periods=n, freq="1min", name="ts")
    return pd.DataFrame(
        {
            "events_per_s": events,
            "error_rate": errors,
            "alert_rate": alerts,
            "p99_latency_ms": latency,
            "anomaly": anomaly,
            "cause": cause,
        },
        index=index,
    )


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    data = frame.drop(columns=[c for c in LABEL_COLUMNS if c in frame], errors="ignore")
    data = data.select_dtypes(include="number")
    if data.empty:
        raise ModelError("the anomaly detector needs a frame with at least one numeric metric column")
    return data.astype(float)


def robust_z(frame: pd.DataFrame, *, window: int) -> pd.DataFrame:
    """Robust z-scores of each reading against the trailing ``window`` of its series.

    The scale is the trailing inter-quartile range (as a standard deviation), floored by half the trailing
    standard deviation (counts that are mostly zero have no IQR) and by 1% of the median.
    """
    data = _numeric(frame)
    min_periods = max(3, min(window, 10))

    def scores(x: pd.DataFrame) -> pd.DataFrame:
        past = x.rolling(window, min_periods=min_periods)
        med = past.median().shift(1)
        iqr = (past.quantile(0.75) - past.quantile(0.25)).shift(1) / 1.349
        # np.maximum of two frames is a frame (pandas' __array_ufunc__); the stubs say ndarray
        scale = cast(pd.DataFrame, np.maximum(iqr, 0.5 * past.std().shift(1).fillna(0.0)))
        scale = cast(pd.DataFrame, np.maximum(scale, 0.01 * med.abs() + 1e-9))
        return ((x - med) / scale).clip(-_CLIP, _CLIP).fillna(0.0)

    return scores(data)


class AnomalyDetector:
    """A fitted detector. ``score(frame)`` -> one row per bucket: ``score``, ``anomaly``, ``metric``, ``z``.

    ``forest`` None makes the baseline (no training): a bucket's score is its largest robust |z| divided by
    ``_CLIP``, and the threshold is ``z_threshold``.
    """

    kind = "anomaly"

    def __init__(self, forest: Any, *, window: int, threshold: float, z_threshold: float = 8.0) -> None:
        self.forest = forest
        self.window = window
        self.threshold = threshold
        self.z_threshold = z_threshold

    @classmethod
    def baseline(cls, *, window: int = 60, z_threshold: float = 8.0) -> AnomalyDetector:
        return cls(None, window=window, threshold=z_threshold / _CLIP, z_threshold=z_threshold)

    def point_scores(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Per bucket and metric: the anomaly score, and the robust z of the reading."""
        z = robust_z(frame, window=self.window)
        if self.forest is None:
            raw = z.abs().to_numpy() / _CLIP
        else:
            features = z.to_numpy().reshape(-1, 1)
            raw = (-self.forest.score_samples(features)).reshape(z.shape)
        return pd.DataFrame(raw, index=z.index, columns=z.columns), z

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``ts`` (the frame's index), ``score`` (higher = stranger), ``anomaly`` (score >= threshold),
        ``metric`` (the strangest metric of the bucket), ``value`` (its reading) and ``z`` (its robust z)."""
        points, z = self.point_scores(frame)
        values = _numeric(frame)
        pos = np.argmax(points.to_numpy(), axis=1) if len(points) else np.array([], dtype=int)
        rows = np.arange(len(points))
        score = points.to_numpy()[rows, pos] if len(points) else np.array([])
        metric = np.asarray(points.columns)[pos] if len(points) else np.array([], dtype=object)
        out = pd.DataFrame(
            {
                "ts": points.index,
                "score": score,
                "anomaly": score >= self.threshold,
                "metric": metric,
                "value": values.to_numpy()[rows, pos] if len(points) else [],
                "z": z.to_numpy()[rows, pos] if len(points) else [],
            }
        )
        return out.reset_index(drop=True)

    def __repr__(self) -> str:
        model = "baseline robust z" if self.forest is None else "isolation forest"
        return f"<AnomalyDetector {model} window={self.window} threshold={self.threshold:.4g}>"


class AnomalyTrainer:
    """Fits the isolation forest over robust z-scores, then the threshold (best training F1, or a quantile).

    The frame is indexed by time, one numeric column per metric, plus an optional 0/1 ``anomaly`` label column
    (it chooses the threshold and evaluates; the forest never sees it). Splits are chronological. The
    learning curve grows the training span in ``steps`` and scores the last 20% of the training rows.
    """

    kind = "anomaly"
    label = "anomaly"
    defaults: Mapping[str, Any] = {
        "window": 60,
        "n_estimators": 100,
        "max_samples": 256,
        "contamination": 0.02,
        "steps": 2,
    }

    def split(self, frame: pd.DataFrame, *, holdout: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        return chronological_split(frame, holdout=holdout)

    def _fit(self, frame: pd.DataFrame, params: Mapping[str, Any], seed: int) -> AnomalyDetector:
        from sklearn.ensemble import IsolationForest

        window = int(params["window"])
        z = robust_z(frame, window=window)
        features = z.to_numpy().reshape(-1, 1)
        forest = IsolationForest(
            n_estimators=int(params["n_estimators"]),
            max_samples=min(int(params["max_samples"]), len(features)),
            random_state=seed,
        ).fit(features)
        raw = (-forest.score_samples(features)).reshape(z.shape).max(axis=1)
        threshold = float(np.quantile(raw, 1.0 - float(params["contamination"])))
        if self.label in frame and frame[self.label].nunique() == 2:
            threshold = best_f1_threshold(frame[self.label].to_numpy(), raw, default=threshold)
        return AnomalyDetector(forest, window=window, threshold=threshold)

    def fit(
        self,
        frame: pd.DataFrame,
        *,
        params: Mapping[str, Any],
        seed: int,
        log: Callable[[int, Mapping[str, float]], None],
    ) -> AnomalyDetector:
        steps = max(1, int(params["steps"]))
        fit_part, valid = chronological_split(frame, holdout=0.2)
        for step in range(1, steps + 1):
            rows = fit_part.iloc[: max(20, len(fit_part) * step // steps)]
            detector = self._fit(rows, params, seed)
            scores = self._metrics(detector, valid) if self.label in valid else {}
            log(step, {"train_rows": float(len(rows)), **{f"val_{k}": v for k, v in scores.items()}})
        return self._fit(frame, params, seed)

    def _metrics(self, detector: AnomalyDetector, frame: pd.DataFrame) -> dict[str, float]:
        scored = detector.score(frame)
        return binary_metrics(
            frame[self.label].to_numpy(), scored["score"].to_numpy(), threshold=detector.threshold
        )

    def evaluate(self, model: AnomalyDetector, frame: pd.DataFrame) -> dict[str, float]:
        if self.label not in frame:
            raise ModelError("evaluating the anomaly detector needs a 0/1 'anomaly' column")
        return self._metrics(model, frame)
