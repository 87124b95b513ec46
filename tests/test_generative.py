"""Retrieval by recency, importance and relevance, and the citation check of a model's insights."""

from __future__ import annotations

import pytest

from grace_core.errors import ModelOutputError
from grace_core.generative import WEIGHTS, Statement, check_insights, retrieve

HOUR_US = 3_600_000_000
NOW = 100 * HOUR_US


def ids(ranked: list[tuple[Statement, float]]) -> list[str]:
    return [s.id for s, _ in ranked]


def test_relevance_recency_and_importance_each_move_a_statement_up() -> None:
    statements = [
        Statement("old-upload", "upload failed: payload too large", NOW - 10 * HOUR_US, 6.0),
        Statement("new-chat", "chat question about the weather", NOW, 2.0),
        Statement("new-upload", "upload failed: payload too large", NOW, 6.0),
        Statement("alert", "hunter rule fired on chat", NOW, 10.0),
    ]
    ranked = retrieve(
        "Why did the upload fail, payload too large?", statements, now_us=NOW, k=4, half_life_s=3600
    )
    # Equal text and importance: the newer one first. The relevant failures beat the fresher, more important
    # alert only because relevance counts: without it the alert leads.
    assert ids(ranked)[0] == "new-upload"
    assert ids(ranked).index("new-upload") < ids(ranked).index("old-upload")
    blind = retrieve(
        "Why did the upload fail, payload too large?",
        statements,
        now_us=NOW,
        k=4,
        half_life_s=3600,
        weights={**WEIGHTS, "relevance": 0.0},
    )
    assert ids(blind)[0] == "alert"
    assert ids(retrieve("upload", statements, now_us=NOW, k=2, half_life_s=3600)) == ["new-upload", "alert"]


def test_retrieve_keeps_k_best_scaled_scores() -> None:
    statements = [Statement(f"s{i}", f"word{i} upload", NOW - i * HOUR_US, float(i)) for i in range(6)]
    ranked = retrieve("upload", statements, now_us=NOW, k=3, half_life_s=3600)
    assert len(ranked) == 3
    assert all(0.0 <= score <= 3.0 for _, score in ranked)
    assert [score for _, score in ranked] == sorted((score for _, score in ranked), reverse=True)
    assert retrieve("upload", [], now_us=NOW, k=3, half_life_s=3600) == []


def test_insights_must_cite_retrieved_statements_only() -> None:
    answer = {"insights": [{"text": " Uploads   fail when large ", "evidence": ["a", "b", "a"]}]}
    assert check_insights(answer, retrieved=["a", "b"], known=["a", "b", "c"]) == [
        {"text": "Uploads fail when large", "evidence": ["a", "b"]}
    ]
    cases = {
        "which was not retrieved": {"insights": [{"text": "x", "evidence": ["a", "c"]}]},
        "which is no statement's id": {"insights": [{"text": "x", "evidence": ["7"]}]},
        "cites no evidence": {"insights": [{"text": "x", "evidence": []}]},
        "has no text": {"insights": [{"text": " ", "evidence": ["a"]}]},
    }
    for reason, bad in cases.items():
        with pytest.raises(ModelOutputError, match=reason):
            check_insights(bad, retrieved=["a", "b"], known=["a", "b", "c"])
