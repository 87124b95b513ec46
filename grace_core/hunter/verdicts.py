"""False-positive analysis: where does a rule fire on harmless text? Compares the analysts' verdicts by context.

``false_positives(request)`` is a pure function of JSON-able input returning JSON-able output (no workspace
access), like ``grace_core.diagnosis.diagnose``, so that a language model can take its place. The request::

    {"verdicts": [{"id": "<alert id>", "rule": "aws-access-key-id", "target": "chat",
                   "verdict": "false_positive", "context": ["docs", "example", ...]}, ...],
     "params": {...}}          # optional overrides of PARAMS

It answers ``{"insights": [...]}``: at most one per rule, each::

    {"kind": "false_positive", "key": "false_positive:<rule>", "text": "...", "score": 0..1,
     "evidence": [alert ids], "data": {"rule": ..., "false_positives": n, "confirmed": n, "covered": n,
                                        "effect": {"target": "hunter", "rule": ..., "suppress": {...}}}}

How: for a rule with at least ``min_false_positives`` false positives, every word of the alerts' contexts is
counted among the false positives and among the confirmed alerts. A word is an **allowlist word** when it occurs
in at least ``min_word`` false positives, has at least ``min_letters`` letters (short function words say nothing
about a context), and at most ``max_confirmed_share`` of the judged alerts with the word were confirmed (analysts
err now and then, so one stray confirmation does not veto a word; silencing a set of alerts whose confirmed share
is below half the F1 raises F1, see ``grace_core.learning``). Words are chosen greedily, the one covering the most
false positives not covered yet first, up to ``max_words``; the proposal is reported when the chosen words cover
at least ``min_share`` of the false positives. Its effect (``grace_core.effects``) silences the rule where one of
the words is in a finding's context; learning makes it a lesson, and the verdicts on alerts held out of the lesson
measure it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

__all__ = ["PARAMS", "false_positives"]

#: Defaults of the analysis (a request's ``params`` override them).
PARAMS: Mapping[str, float] = {
    "min_false_positives": 3,  # false positives of a rule before it is analysed
    "min_word": 3,  # false positives a word must occur in
    "min_letters": 4,  # shorter words (and, the, for, you) say nothing about a context
    "max_confirmed_share": 0.25,  # share of a word's judged alerts that may be confirmed
    "max_words": 3,  # words of one allowlist
    "min_share": 0.5,  # share of the false positives the words must cover
}


def false_positives(request: Mapping[str, Any]) -> dict[str, Any]:
    """The allowlists the verdicts support (see the module docstring)."""
    params = {**PARAMS, **dict(request.get("params") or {})}
    by_rule: dict[str, list[Mapping[str, Any]]] = {}
    for v in request.get("verdicts", []):
        by_rule.setdefault(str(v["rule"]), []).append(v)
    insights = []
    for rule in sorted(by_rule):
        verdicts = by_rule[rule]
        fps = [v for v in verdicts if v["verdict"] == "false_positive"]
        confirmed = [v for v in verdicts if v["verdict"] == "confirmed"]
        if len(fps) < params["min_false_positives"]:
            continue
        in_fp = Counter(w for v in fps for w in set(v.get("context") or ()))
        in_confirmed = Counter(w for v in confirmed for w in set(v.get("context") or ()))
        most = float(params["max_confirmed_share"])
        candidates = {
            w
            for w, n in in_fp.items()
            if len(w) >= params["min_letters"]
            and n >= params["min_word"]
            and in_confirmed.get(w, 0) <= most * (n + in_confirmed.get(w, 0))
        }
        chosen: list[str] = []
        uncovered = list(fps)
        while candidates and len(chosen) < int(params["max_words"]):
            gain = Counter(w for v in uncovered for w in set(v.get("context") or ()) if w in candidates)
            if not gain:
                break
            word, _ = min(gain.items(), key=lambda item: (-item[1], in_confirmed.get(item[0], 0), item[0]))
            chosen.append(word)
            candidates.discard(word)
            uncovered = [v for v in uncovered if word not in (v.get("context") or ())]
        covered = len(fps) - len(uncovered)
        if not chosen or covered < params["min_share"] * len(fps):
            continue
        words = sorted(chosen)
        hits = [v for v in fps if not set(words).isdisjoint(v.get("context") or ())]
        stray = sum(1 for v in confirmed if not set(words).isdisjoint(v.get("context") or ()))
        quoted = ", ".join(f'"{w}"' for w in words)
        insights.append(
            {
                "kind": "false_positive",
                "key": f"false_positive:{rule}",
                "text": (
                    f"Hunter rule {rule}: {covered} of {len(fps)} false positives have {quoted} nearby, "
                    f"{stray} of {len(confirmed)} confirmed alerts do; allowlist those words for this rule."
                ),
                "score": round(covered / len(verdicts), 6),
                "evidence": [str(v["id"]) for v in hits],
                "data": {
                    "rule": rule,
                    "false_positives": len(fps),
                    "confirmed": len(confirmed),
                    "covered": covered,
                    "effect": {
                        "target": "hunter",
                        "rule": rule,
                        "cause": "false_positive",
                        "suppress": {"context": words},
                    },
                },
            }
        )
    return {"insights": insights}
