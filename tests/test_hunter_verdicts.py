"""The false-positive analysis: allowlists of context words from analysts' verdicts (a pure function)."""

from __future__ import annotations

import json
from typing import Any

from grace_core.effects import validate_effect
from grace_core.hunter.verdicts import false_positives


def verdict(n: int, verdict: str, *words: str, rule: str = "aws-access-key-id") -> dict[str, Any]:
    return {"id": f"a{n}", "rule": rule, "target": "chat", "verdict": verdict, "context": sorted(words)}


def test_words_of_false_positives_that_confirmed_alerts_lack_become_an_allowlist() -> None:
    verdicts = [
        *(verdict(i, "false_positive", "the", "example", "documentation", "key") for i in range(4)),
        *(verdict(10 + i, "false_positive", "order", "coupon", "invoice") for i in range(3)),
        *(verdict(20 + i, "confirmed", "the", "deploy", "key", "credentials") for i in range(5)),
    ]
    answer = false_positives({"verdicts": verdicts})
    assert json.loads(json.dumps(answer)) == answer  # JSON in, JSON out
    [insight] = answer["insights"]
    effect = insight["data"]["effect"]
    assert validate_effect(effect) == effect
    words = effect["suppress"]["context"]
    assert len(words) == 2  # one word per kind of harmless text covers all seven
    assert set(words) <= {"example", "documentation", "order", "coupon", "invoice"}
    assert "key" not in words  # confirmed alerts have it too
    assert insight["data"]["covered"] == 7
    assert sorted(insight["evidence"]) == sorted(f"a{i}" for i in (0, 1, 2, 3, 10, 11, 12))


def test_an_analysts_stray_mistake_does_not_veto_a_word_but_real_attacks_do() -> None:
    fps = [verdict(i, "false_positive", "example") for i in range(6)]
    stray = [verdict(10, "confirmed", "example")]  # one analyst error among seven
    [insight] = false_positives({"verdicts": fps + stray})["insights"]
    assert insight["data"]["effect"]["suppress"]["context"] == ["example"]
    attacks = [verdict(20 + i, "confirmed", "example") for i in range(4)]  # the word is in attacks too
    assert false_positives({"verdicts": fps + attacks})["insights"] == []


def test_too_few_false_positives_or_only_short_words_propose_nothing() -> None:
    assert false_positives({"verdicts": [verdict(i, "false_positive", "example") for i in range(2)]}) == {
        "insights": []
    }
    short = [verdict(i, "false_positive", "and", "the") for i in range(5)]
    assert false_positives({"verdicts": short})["insights"] == []
    per_rule = [
        *(verdict(i, "false_positive", "example", rule="r1") for i in range(3)),
        *(verdict(5 + i, "false_positive", "comment", rule="r2") for i in range(3)),
    ]
    assert [i["key"] for i in false_positives({"verdicts": per_rule})["insights"]] == [
        "false_positive:r1",
        "false_positive:r2",
    ]
