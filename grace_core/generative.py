"""Retrieval and citation checks of a Generative Agents reflection (Park et al., 2023, section 4.2).

The reflection loop asks a model for the salient questions about recent events (prompt
``reflection.questions``), retrieves the statements (events and earlier insights) that bear on each question,
and asks for insights citing them (prompt ``reflection.insights``). This module holds the two pure parts:

* ``retrieve``: the statements ranked by recency, importance and relevance, combined as in the paper, a
  weighted sum of the three after each is scaled to [0, 1] over the candidates (min-max):

  - **recency** ``0.5 ** (age / half_life)`` (the paper decays by 0.995 per game hour; a half-life reads
    better in simulated seconds);
  - **importance** the statement's importance on the reflection's 0-10 scale (``reflection.importance`` for
    events; ``INSIGHT_IMPORTANCE`` for insights);
  - **relevance** the BM25 score of the statement's text for the question (``grace_core.bm25``; the paper
    uses embedding cosine similarity, BM25 keeps the loop free of a model for retrieval).

  ``WEIGHTS`` are all 1, as in the paper; the loop's parameters ``w_recency``, ``w_importance`` and
  ``w_relevance`` change them.
* ``check_insights``: an answer's insights must each cite at least one statement, and only statements
  retrieved for the question; otherwise the whole answer is rejected (nothing of it is stored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .bm25 import BM25, Params, tokenize
from .errors import ModelOutputError

__all__ = ["INSIGHT_IMPORTANCE", "WEIGHTS", "Statement", "check_insights", "retrieve"]

#: Weights of the three scores in ``retrieve`` (Park et al. use 1 for each).
WEIGHTS: Mapping[str, float] = {"recency": 1.0, "importance": 1.0, "relevance": 1.0}
#: Importance of an earlier insight in retrieval: as high as a refused question (``reflection.IMPORTANCE``),
#: below a failure (6), so fresh evidence still outranks a summary of older evidence of the same relevance.
INSIGHT_IMPORTANCE = 5.0


@dataclass(frozen=True)
class Statement:
    """One thing a reflection may cite: an event (``level`` 0) or an earlier insight (``level`` >= 1)."""

    id: str
    text: str
    ts_us: int
    importance: float
    level: int = 0
    key: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # for the offline policy (e.g. ``run``, ``topic``)

    def as_input(self) -> dict[str, Any]:
        """The statement as a prompt input item: id and text, plus what the offline policy reads."""
        item: dict[str, Any] = {"id": self.id, "text": self.text, "level": self.level, **self.extra}
        if self.key is not None:
            item["key"] = self.key
        return item


def _scaled(values: Sequence[float]) -> list[float]:
    lo, hi = min(values), max(values)
    return [(v - lo) / (hi - lo) if hi > lo else 0.0 for v in values]


def retrieve(
    question: str,
    statements: Sequence[Statement],
    *,
    now_us: int,
    k: int,
    half_life_s: float,
    weights: Mapping[str, float] = WEIGHTS,
) -> list[tuple[Statement, float]]:
    """The ``k`` statements with the best combined score for ``question``, best first (ties: given order)."""
    if not statements or k <= 0:
        return []
    half_life_us = max(half_life_s, 1e-6) * 1e6
    recency = [0.5 ** (max(0, now_us - s.ts_us) / half_life_us) for s in statements]
    importance = [s.importance for s in statements]
    index = BM25([tokenize(s.text) for s in statements], params=Params())
    relevance = [0.0] * len(statements)
    for i, value in index.top(tokenize(question), len(statements)):
        relevance[i] = value
    parts = zip(_scaled(recency), _scaled(importance), _scaled(relevance), strict=True)
    scores = [
        weights["recency"] * r + weights["importance"] * m + weights["relevance"] * v for r, m, v in parts
    ]
    order = sorted(range(len(statements)), key=lambda i: (-scores[i], i))[:k]
    return [(statements[i], round(scores[i], 6)) for i in order]


def check_insights(
    data: Mapping[str, Any], *, retrieved: Sequence[str], known: Sequence[str]
) -> list[dict[str, Any]]:
    """The insights of a ``reflection.insights`` answer, each ``{text, evidence}`` with its cited ids deduplicated.

    Raises ``ModelOutputError`` (one line saying why) if an insight cites nothing, an id that does not exist
    (not in ``known``), or one that exists but was not retrieved for this question.
    """
    allowed, exists = set(retrieved), set(known)
    out = []
    for i, insight in enumerate(data.get("insights") or []):
        text = " ".join(str(insight.get("text", "")).split())
        cited = list(dict.fromkeys(str(x).strip() for x in insight.get("evidence") or []))
        if not text:
            raise ModelOutputError(f"insight {i} has no text")
        if not cited:
            raise ModelOutputError(f"insight {i} cites no evidence")
        for ref in cited:
            if ref not in exists:
                raise ModelOutputError(f"insight {i} cites {ref!r}, which is no statement's id")
            if ref not in allowed:
                raise ModelOutputError(
                    f"insight {i} cites {ref!r}, which was not retrieved for this question"
                )
        out.append({"text": text, "evidence": cited})
    return out
