"""Helpers shared by the trainers and the registry: held-out splits, binary metrics, digests."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from grace_core.errors import ModelError

__all__ = [
    "best_f1_threshold",
    "binary_metrics",
    "canonical_dataset_bytes",
    "chronological_split",
    "code_digest",
    "dataset_digest",
    "dataset_schema",
    "finite",
    "stratified_split",
]


def finite(value: Any) -> float | None:
    """A float fit for an event payload (NaN and infinities become None)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def stratified_split(
    frame: pd.DataFrame, label: str, *, holdout: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test rows, ``holdout`` of each label value held out, chosen by a seeded shuffle."""
    if not 0 < holdout < 1:
        raise ModelError(f"holdout is a fraction between 0 and 1, not {holdout!r}")
    rng = np.random.default_rng(seed)
    test_idx: list[int] = []
    for value in sorted(frame[label].unique().tolist()):
        positions = np.flatnonzero(frame[label].to_numpy() == value)
        rng.shuffle(positions)
        test_idx.extend(positions[: max(1, round(len(positions) * holdout))].tolist())
    mask = np.zeros(len(frame), dtype=bool)
    mask[test_idx] = True
    return frame.iloc[~mask].reset_index(drop=True), frame.iloc[mask].reset_index(drop=True)


def chronological_split(frame: pd.DataFrame, *, holdout: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first rows for training, the last ``holdout`` of them held out (time series must not be shuffled)."""
    if not 0 < holdout < 1:
        raise ModelError(f"holdout is a fraction between 0 and 1, not {holdout!r}")
    cut = len(frame) - max(1, round(len(frame) * holdout))
    return frame.iloc[:cut], frame.iloc[cut:]


def binary_metrics(y_true: Any, score: Any, *, threshold: float) -> dict[str, float]:
    """Precision, recall, F1, accuracy, ROC AUC and average precision of scores against 0/1 labels."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y_true).astype(int)
    s = np.asarray(score, dtype=float)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    both = len(set(y.tolist())) == 2
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": (tp + tn) / len(y) if len(y) else math.nan,
        "auc": float(roc_auc_score(y, s)) if both else math.nan,
        "average_precision": float(average_precision_score(y, s)) if both else math.nan,
        "rows": float(len(y)),
        "positives": float(tp + fn),
    }


def best_f1_threshold(y_true: Any, score: Any, *, default: float) -> float:
    """The score threshold with the best F1 on labelled data (``default`` when no threshold catches any)."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(np.asarray(y_true).astype(int), score)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    if len(thresholds) == 0 or not np.any(f1[:-1] > 0):
        return default
    return float(thresholds[int(np.argmax(f1[:-1]))])


def _cell(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float | np.floating):
        return repr(float(value)) if not math.isnan(value) else "NaN"
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def canonical_dataset_bytes(frame: pd.DataFrame) -> bytes:
    """One serialisation per dataset: column names, dtypes, then every row in order, as compact JSON.

    Floats are written with ``repr`` (shortest round-trip form), timestamps in ISO 8601, so the bytes (and the
    digest) depend on the data only, not on the pandas version or the platform. A meaningful index (anything
    but the default 0..n-1) is part of the data.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ModelError(f"a dataset is a pandas DataFrame, not {type(frame).__name__}")
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.start != 0 or frame.index.step != 1:
        frame = frame.reset_index()
    head = {"columns": [str(c) for c in frame.columns], "dtypes": [str(t) for t in frame.dtypes]}
    parts = [json.dumps(head, separators=(",", ":"), ensure_ascii=False)]
    columns = [frame[c].tolist() for c in frame.columns]
    for row in zip(*columns, strict=True):
        parts.append(json.dumps([_cell(v) for v in row], separators=(",", ":"), ensure_ascii=False))
    return "\n".join(parts).encode("utf-8")


def dataset_digest(frame: pd.DataFrame) -> str:
    """``sha256:<hex>`` of the canonical serialisation."""
    return "sha256:" + hashlib.sha256(canonical_dataset_bytes(frame)).hexdigest()


def dataset_schema(frame: pd.DataFrame) -> dict[str, str]:
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    return {str(c): str(t) for c, t in frame.dtypes.items()}


def code_digest(trainer: Any) -> str:
    """``sha256:<hex>`` of the trainer's source: its whole module when it has one, else its class."""
    cls = trainer if isinstance(trainer, type) else type(trainer)
    source = None
    module = inspect.getmodule(cls)
    for target in (module, cls):
        if target is None:
            continue
        try:
            source = inspect.getsource(target)
            break
        except (OSError, TypeError):
            continue
    if source is None:  # defined where no source is kept (an interactive session): its name stands in
        source = f"{cls.__module__}.{cls.__qualname__}"
    return "sha256:" + hashlib.sha256(source.encode("utf-8")).hexdigest()


def label_counts(frame: pd.DataFrame, label: str | None) -> dict[str, int] | None:
    if not label or label not in frame:
        return None
    counts = frame[label].value_counts(dropna=False)
    return {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))}


def jsonable_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    return {str(k): finite(v) for k, v in sorted(metrics.items())}
