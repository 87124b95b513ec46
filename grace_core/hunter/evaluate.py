"""Rule evaluation for researchers: precision, recall and confusion tables on a labelled DataFrame.

The frame has a ``text`` column and a ``label`` column (and optionally a ``target`` column, overriding the
``target`` argument row by row). Labels come in one of two forms, chosen by what the column holds:

* **rule ids** (strings; a list of them for a text that should fire several rules; ``""``/``None``/NaN for a
  benign text). A rule's positives are the rows labelled with its id. The pack-level table counts a row as
  detected when any evaluated rule fires, and ``pack["matched_expected"]`` is the share of labelled rows on
  which every expected rule fired.
* **booleans** ("malicious"; 0/1 are read as booleans too). A rule's positives are all malicious rows, so its
  recall is the share of malicious texts that rule alone catches; the pack's recall is the share any rule catches.

For each rule and for the pack: ``tp`` (fired on a positive), ``fp`` (fired on a negative), ``fn`` (silent on a
positive), ``tn``, precision ``tp/(tp+fp)``, recall ``tp/(tp+fn)`` and F1 (NaN where a denominator is zero).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from grace_core.errors import ScanError

from .rules import TARGETS
from .scanner import Scanner

__all__ = ["EvalReport", "evaluate_frame"]

_COUNTS = ("tp", "fp", "fn", "tn")


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, Any]:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = (
        2 * precision * recall / (precision + recall)
        if not (math.isnan(precision) or math.isnan(recall)) and precision + recall
        else math.nan
    )
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall, "f1": f1}


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return True
    return isinstance(value, numbers.Integral) and int(value) in (0, 1)


def _rule_label(value: Any) -> bool:
    if _missing(value) or isinstance(value, str):
        return True
    return isinstance(value, list | tuple | set | frozenset) and all(isinstance(x, str) for x in value)


def _label_mode(labels: Sequence[Any]) -> str:
    if labels and all(_boolean(v) for v in labels):
        return "malicious"
    if all(_rule_label(v) for v in labels):
        return "rule"
    raise ScanError(
        "label must hold either booleans (malicious or not) or rule ids (a string, a list of strings, or "
        "''/None for a benign text), not a mix"
    )


def _expected(value: Any) -> frozenset[str]:
    if _missing(value) or value == "":
        return frozenset()
    if isinstance(value, str):
        return frozenset({value})
    return frozenset(v for v in value if v)


@dataclass(frozen=True)
class EvalReport:
    """What ``evaluate`` returns. ``rules`` has one row per rule; ``pack`` is the same for the whole pack."""

    mode: str  # "rule" (labels are rule ids) or "malicious" (labels are booleans)
    rules: pd.DataFrame
    pack: dict[str, Any]
    predictions: pd.DataFrame = field(repr=False)

    def confusion(self, rule: str | None = None) -> pd.DataFrame:
        """The 2x2 confusion table of one rule (or of the pack): actual rows, predicted columns."""
        counts: Mapping[Any, Any] = self.pack if rule is None else self.rules.loc[rule].to_dict()
        return pd.DataFrame(
            [[int(counts["tp"]), int(counts["fn"])], [int(counts["fp"]), int(counts["tn"])]],
            index=pd.Index(["actual positive", "actual negative"]),
            columns=pd.Index(["predicted positive", "predicted negative"]),
        )

    def __str__(self) -> str:
        p = self.pack
        head = (
            f"{len(self.predictions)} texts, {len(self.rules)} rules ({self.mode} labels): "
            f"pack precision {p['precision']:.3f}, recall {p['recall']:.3f} "
            f"(tp {p['tp']}, fp {p['fp']}, fn {p['fn']}, tn {p['tn']})"
        )
        return head + "\n" + str(self.rules.to_string(float_format=lambda x: f"{x:.3f}"))


def evaluate_frame(
    scanner: Scanner, frame: pd.DataFrame, *, target: str, rule_ids: Iterable[str]
) -> EvalReport:
    """Scan every text of ``frame`` with ``scanner`` and score the rules ``rule_ids`` against the labels."""
    if not isinstance(frame, pd.DataFrame) or not {"text", "label"} <= set(frame.columns):
        raise ScanError("evaluate needs a DataFrame with the columns 'text' and 'label'")
    if target not in TARGETS:
        raise ScanError(f"unknown scan target {target!r}; one of {', '.join(TARGETS)}")
    ids = list(dict.fromkeys(rule_ids))
    texts = frame["text"].tolist()
    labels = frame["label"].tolist()
    targets = frame["target"].tolist() if "target" in frame.columns else [target] * len(texts)
    if not all(isinstance(t, str) for t in texts):
        raise ScanError("every 'text' must be a string")
    mode = _label_mode(labels)
    chosen = set(ids)
    if mode == "rule":
        expected = [_expected(v) for v in labels]
        unknown = sorted(set().union(*expected) - chosen) if expected else []
        if unknown:
            raise ScanError(f"labels name rules that are not evaluated: {', '.join(unknown)}")
    else:
        expected = [frozenset(chosen) if bool(v) else frozenset() for v in labels]
    fired = [frozenset(scanner.fires(t, target=tg) & chosen) for t, tg in zip(texts, targets, strict=True)]

    rows = []
    for rid in ids:
        tp = sum(1 for e, f in zip(expected, fired, strict=True) if rid in e and rid in f)
        fp = sum(1 for e, f in zip(expected, fired, strict=True) if rid not in e and rid in f)
        fn = sum(1 for e, f in zip(expected, fired, strict=True) if rid in e and rid not in f)
        tn = len(texts) - tp - fp - fn
        rows.append({"rule": rid, **_scores(tp, fp, fn, tn)})
    per_rule = pd.DataFrame(rows, columns=["rule", *_COUNTS, "precision", "recall", "f1"]).set_index("rule")

    actual = [bool(e) for e in expected]
    detected = [bool(f) for f in fired]
    pack = _scores(
        sum(a and d for a, d in zip(actual, detected, strict=True)),
        sum(d and not a for a, d in zip(actual, detected, strict=True)),
        sum(a and not d for a, d in zip(actual, detected, strict=True)),
        sum(not a and not d for a, d in zip(actual, detected, strict=True)),
    )
    if mode == "rule":
        labelled = [(e, f) for e, f in zip(expected, fired, strict=True) if e]
        pack["matched_expected"] = _ratio(sum(1 for e, f in labelled if e <= f), len(labelled))
    predictions = pd.DataFrame(
        {
            "text": texts,
            "label": labels,
            "target": targets,
            "expected": [sorted(e) for e in expected] if mode == "rule" else actual,
            "fired": [sorted(f) for f in fired],
            "detected": detected,
        }
    )
    return EvalReport(mode, per_rule, pack, predictions)
