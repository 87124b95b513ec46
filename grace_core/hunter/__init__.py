"""Hunter: threat detection over chat, code, memory, files and tasks, with rules as data.

The rules live on the ledger: a new workspace publishes the default pack (``rules.yaml``) as one
``hunter.pack_loaded`` event, and every later change is an event too (``hunter.rule_added``,
``hunter.rule_updated``, ``hunter.rule_disabled``, ``hunter.rule_enabled``); table ``hunter_rules`` is their
projection, and the scanner is compiled from it (again whenever it changes). Every change after genesis is
governed: it needs ``governance.check(actor, "hunter.rule.add" | "hunter.rule.update" | "hunter.rule.disable"
| "hunter.rule.enable" | "hunter.pack.load", ...)`` to allow it (admins and the engines; not researchers or
viewers), so a rule change is logged as a decision first and a refused one publishes nothing else.

``scan(text, target=...)`` is pure. ``screen(text, target=..., actor=..., resource=...)`` scans and publishes one
``hunter.alert`` per rule that fired (count, spans, masked excerpts), caused by the event being handled; given
``findings=`` (what ``scan`` returned for that text), it publishes them without scanning again. Texts entering the
workspace are screened where they enter (``tasks.create``, ``memory.write``, ``chat.send``, ``sandbox.run``).

Besides its rules, Hunter runs the detectors other engines register with it
(``register_detector(name, fn, targets=...)``; ``fn(text, target=...)`` returns findings): MLDL registers its
deployed prompt-injection model for chat texts and unregisters it when the model is undeployed. Hunter itself
knows no engine above it.

**Feedback and lessons.** ``feedback(alert_id, verdict, actor=...)`` records an analyst's verdict on an alert
(``confirmed`` or ``false_positive``; a ``hunter.feedback`` event, governed as ``hunter.feedback``); the verdict
is a column of ``hunter_alerts``. Learning turns repeated false positives into lessons whose effect is data for
Hunter (``grace_core.effects``: a context allowlist or a severity for one rule) and hands Hunter the active
ones (``use_lessons``). ``screen`` applies them: a finding a lesson suppresses raises no alert (a
``hunter.alert_suppressed`` event says which lessons silenced what), except for a seeded share of screens held
out of each lesson, whose alerts name the lesson (``held_out``) so that the analysts' verdicts on them measure
it. Lessons change which findings alert, never what is masked: ``scan`` stays the rules' raw findings. Each
alert keeps its ``context``, the plain words (letters only, outside every finding) around its findings, which
is what a lesson's allowlist matches.

An alert fans out in a durable mesh subscriber (``hunter.fanout``, :mod:`grace_core.hunter.fanout`), never in
the scanner: a task, a memory entry and a live notification, each caused by the alert.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from grace_core.effects import suppresses
from grace_core.errors import FeedbackError, RuleError, ScanError
from grace_core.events import Event, canonical_json
from grace_core.mesh import Message
from grace_core.times import TS

from .evaluate import EvalReport, evaluate_frame
from .rules import (
    SEVERITIES,
    TARGETS,
    Pack,
    Rule,
    default_pack,
    load_pack,
    pack_from_dict,
    rule_from_dict,
    severity_rank,
)
from .scanner import Finding, Scanner, check_examples, scanner_for, shannon_entropy

if TYPE_CHECKING:
    from grace_core.governance import Governance
    from grace_core.workspace import Workspace

__all__ = [
    "SEVERITIES",
    "TARGETS",
    "VERDICTS",
    "Detector",
    "EvalReport",
    "Finding",
    "Hunter",
    "LessonSource",
    "Pack",
    "Rule",
    "Scanner",
    "context_words",
    "default_pack",
    "default_scanner",
    "evaluate",
    "load_pack",
    "severity_rank",
    "shannon_entropy",
]

HUNTER = "hunter"  # the actor of everything Hunter publishes
MAX_SPANS = 1000  # per alert; the count is always exact
MAX_EXCERPTS = 20
VERDICTS = ("confirmed", "false_positive")  # an analyst's verdict on an alert
CONTEXT_CHARS = 80  # characters each side of a finding whose words are its context
MAX_CONTEXT_WORDS = 60  # per alert
_CONTEXT_WORD = re.compile(r"(?<![A-Za-z0-9_\\])[A-Za-z]{3,15}(?![A-Za-z0-9_])")
_RULE_TOPICS = (
    "hunter.pack_loaded",
    "hunter.rule_added",
    "hunter.rule_updated",
    "hunter.rule_disabled",
    "hunter.rule_enabled",
)


class Detector(Protocol):
    """A detection another engine adds to Hunter's scans: the findings of ``text`` scanned as ``target``."""

    def __call__(self, text: str, *, target: str) -> list[Finding]: ...


class LessonSource(Protocol):
    """Where Hunter finds the lessons it applies (learning is one): active Hunter effects and their holdout."""

    def hunter_lessons(self) -> Sequence[tuple[str, Mapping[str, Any]]]:
        """The active lessons with a Hunter effect: (lesson id, effect in normal form), oldest first."""
        ...

    def hunter_held_out(self, lesson: str, key: str) -> bool:
        """Whether the screen identified by ``key`` is held out of ``lesson`` (seeded, the same on a replay)."""
        ...


def context_words(text: str, findings: Sequence[Finding], spans: Sequence[tuple[int, int]]) -> list[str]:
    """The plain words around ``findings`` in ``text``: letters only, lower case, outside every span of
    ``spans`` (all findings of the text), within ``CONTEXT_CHARS`` of a finding; sorted, at most
    ``MAX_CONTEXT_WORDS``. Words never include a finding's own text, so they hold no secret a rule sees."""
    words: set[str] = set()
    for f in findings:
        lo, hi = max(0, f.start - CONTEXT_CHARS), min(len(text), f.end + CONTEXT_CHARS)
        for m in _CONTEXT_WORD.finditer(text, lo, hi):
            if not any(m.start() < e and s < m.end() for s, e in spans):
                words.add(m.group().lower())
    return sorted(words)[:MAX_CONTEXT_WORDS]


def default_scanner() -> Scanner:
    """The scanner of the default pack (no workspace needed)."""
    return scanner_for(tuple(r for r in default_pack().rules if r.enabled))


def evaluate(
    frame: pd.DataFrame,
    *,
    target: str = "chat",
    rules: Sequence[str | Rule | Mapping[str, Any]] | None = None,
) -> EvalReport:
    """Evaluate the default pack (or some of its rules, or candidate rules) on a labelled frame.

    See :mod:`grace_core.hunter.evaluate` for the frame and the two label forms.
    """
    pack = default_pack()
    return _evaluate(frame, target=target, rules=rules, known=list(pack.rules))


def _evaluate(
    frame: pd.DataFrame,
    *,
    target: str,
    rules: Sequence[str | Rule | Mapping[str, Any]] | None,
    known: list[Rule],
) -> EvalReport:
    by_id = {r.id: r for r in known}
    if rules is None:
        chosen = [r for r in known if r.enabled]
    else:
        if isinstance(rules, str | Mapping | Rule):
            rules = [rules]
        chosen = []
        for item in rules:
            if isinstance(item, str):
                if item not in by_id:
                    raise RuleError(f"no rule {item!r}")
                chosen.append(by_id[item])
            elif isinstance(item, Rule):
                chosen.append(item)
            else:
                chosen.append(rule_from_dict(item))
    ids = [r.id for r in chosen]
    # A decoding rule needs the injection rules to judge what it decodes; they help, they are not scored.
    helpers = (
        [
            r
            for r in known
            if r.enabled and r.category == "injection" and r.decode is None and r.id not in set(ids)
        ]
        if any(r.decode for r in chosen)
        else []
    )
    scanner = scanner_for(tuple(chosen + helpers))
    return evaluate_frame(scanner, frame, target=target, rule_ids=ids)


class Hunter:
    """The Hunter engine of one workspace (``ws.hunter``)."""

    def __init__(self, ws: Workspace, *, governance: Governance) -> None:
        self._ws = ws
        self._governance = governance
        self._lock = threading.Lock()
        self._generation = 0  # bumped whenever the rule table changes; the scanner is rebuilt lazily
        self._built: tuple[int, tuple[Rule, ...], Scanner] | None = None
        self._started = False
        self._detectors: dict[str, tuple[Detector, frozenset[str]]] = {}
        self._lessons: LessonSource | None = None
        ws.projections.register("hunter_rules", "hunter.*", self._apply_rules, tables=["hunter_rules"])
        ws.projections.register("hunter_alerts", "hunter.*", _apply_alerts, tables=["hunter_alerts"])

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def seed_defaults(self) -> None:
        """Publish the default pack as one ``hunter.pack_loaded`` event (a new workspace does this once)."""
        self._publish_pack(default_pack(), actor=HUNTER)

    def start(self) -> None:
        """Give a workspace made before Hunter had rules the default pack (called once the workspace is wired)."""
        if self._started or self._ws.read_only:
            return
        self._started = True
        if self._ws.ledger.head[0] > 0 and not self._rows():
            self.seed_defaults()

    # -- scanning ----------------------------------------------------------------------------------------------
    @property
    def scanner(self) -> Scanner:
        """The compiled scanner of the workspace's enabled rules (rebuilt after any rule change)."""
        return self._current()[2]

    def scan(self, text: str, *, target: str) -> list[Finding]:
        """Every finding of the enabled rules and the registered detectors in ``text`` scanned as ``target``.

        Publishes nothing. A text over ``MAX_TEXT`` characters is refused (``ScanError``).
        """
        findings = self.scanner.scan(text, target=target)
        for detector, targets in list(self._detectors.values()):
            if target in targets:
                extra = detector(text, target=target)
                if extra:
                    findings = sorted([*findings, *extra], key=lambda f: (f.start, f.end))
        return findings

    def register_detector(self, name: str, fn: Detector, *, targets: Iterable[str] = ("chat",)) -> None:
        """Run ``fn`` beside the rules on texts scanned as one of ``targets`` (replaces a detector of that name).

        Its findings are alerted like a rule's; a finding's ``rule`` should name the detector (``ml.*``).
        """
        chosen = frozenset(targets)
        unknown = sorted(chosen - set(TARGETS))
        if not name or unknown or not chosen:
            raise RuleError(
                f"a detector needs a name and targets among {', '.join(TARGETS)}; got {unknown or name!r}"
            )
        with self._lock:
            self._detectors = {**self._detectors, name: (fn, chosen)}

    def unregister_detector(self, name: str) -> None:
        """Stop running a detector (nothing if none has that name)."""
        with self._lock:
            self._detectors = {k: v for k, v in self._detectors.items() if k != name}

    @property
    def detectors(self) -> dict[str, tuple[str, ...]]:
        """The registered detectors and the targets each runs on."""
        return {
            name: tuple(t for t in TARGETS if t in targets) for name, (_, targets) in self._detectors.items()
        }

    def screen(
        self,
        text: str,
        *,
        target: str,
        actor: str,
        resource: str | None = None,
        findings: Sequence[Finding] | None = None,
    ) -> list[Finding]:
        """Scan ``text`` and publish one ``hunter.alert`` per rule that fired; returns the findings.

        ``actor`` is whoever the text came from; the alerts are published by ``hunter``, caused by the event
        being handled (if any). ``findings``: what ``scan(text, target=target)`` returned already (a caller
        that masks the text before recording it), so the text is scanned once. A read-only snapshot only scans.
        """
        if not isinstance(actor, str) or not actor:
            raise ScanError("screen needs the actor the text came from")
        findings = self.scan(text, target=target) if findings is None else list(findings)
        if not findings or self._ws.read_only:
            return findings
        scan_id = self._ws.mesh.new_id()
        by_rule: dict[str, list[Finding]] = {}
        for f in findings:
            by_rule.setdefault(f.rule, []).append(f)
        rules = {r.id: r for r in self._current()[1]}
        lessons = self._active_lessons()
        spans = [(f.start, f.end) for f in findings]
        key = ""
        messages = []
        for rid, group in by_rule.items():
            payload = _alert_payload(rules.get(rid) or _model_rule(group), group, actor, resource, scan_id)
            words = context_words(text, group, spans)
            payload["context"] = words
            silenced: list[str] = []
            held: list[str] = []
            for lesson, effect in lessons.get(rid, ()):
                if (
                    "severity" in effect and ("when" not in effect or effect["when"]["target"] == target)
                ):  # a severity changes how urgent an alert is, never whether it is raised: nothing to hold out
                    payload["severity"] = effect["severity"]
                    payload.setdefault("lessons", []).append(lesson)
                if not suppresses(effect, target=target, words=words):
                    continue
                key = key or _screen_key(text, target, self._ws.clock.time())
                assert self._lessons is not None
                (held if self._lessons.hunter_held_out(lesson, key) else silenced).append(lesson)
            if silenced:
                messages.append(
                    Message(
                        "hunter.alert_suppressed",
                        {
                            "rule": rid,
                            "target": target,
                            "actor": actor,
                            "resource": resource,
                            "count": len(group),
                            "scan": scan_id,
                            "lessons": silenced,
                            "held_out": held,
                            "context": words,
                        },
                        resource,
                    )
                )
                continue
            if held:
                payload["held_out"] = held
            messages.append(Message("hunter.alert", payload, resource))
        self._ws.publish_many(messages, actor=HUNTER)
        return findings

    # -- lessons and feedback ----------------------------------------------------------------------------------
    def use_lessons(self, source: LessonSource | None) -> None:
        """Apply the lessons of ``source`` when screening (learning hands itself over; None: apply none)."""
        self._lessons = source

    def _active_lessons(self) -> dict[str, list[tuple[str, Mapping[str, Any]]]]:
        out: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
        if self._lessons is not None:
            for lesson, effect in self._lessons.hunter_lessons():
                out.setdefault(str(effect["rule"]), []).append((lesson, effect))
        return out

    def feedback(self, alert_id: str, verdict: str, *, actor: str, note: str = "") -> Event:
        """Record an analyst's ``verdict`` on an alert (``confirmed`` or ``false_positive``): a ``hunter.feedback``.

        Governance decides first (``hunter.feedback`` on ``hunter:alert:<id>``: admins, researchers and the
        engines in the default pack); an unknown alert or verdict raises ``FeedbackError`` and publishes nothing.
        A later verdict on the same alert replaces the earlier one (both stay on the ledger).
        """
        if verdict not in VERDICTS:
            raise FeedbackError(f"a verdict is one of {', '.join(VERDICTS)}, not {verdict!r}")
        if not isinstance(note, str):
            raise FeedbackError("a feedback note is text")
        if not isinstance(alert_id, str) or not alert_id:
            raise FeedbackError(f"feedback names an alert id, not {alert_id!r}")
        row = (
            self._ws.ledger.reader()
            .execute("SELECT rule, target FROM hunter_alerts WHERE id = ?", [alert_id])
            .fetchone()
        )
        if row is None:
            raise FeedbackError(f"no alert {alert_id!r}; see hunter.alerts()")
        resource = f"hunter:alert:{alert_id}"
        self._governance.check(actor, "hunter.feedback", resource=resource, context={"verdict": verdict})
        return self._ws.publish(
            "hunter.feedback",
            {"alert": alert_id, "rule": row[0], "target": row[1], "verdict": verdict, "note": note},
            actor=actor,
            resource=resource,
        )

    def verdicts(self, *, since: float | None = None) -> list[dict[str, Any]]:
        """Alerts with a verdict (given at or after ``since``, epoch seconds), oldest verdict first: id, rule,
        target, verdict, context (words) and held_out (lesson ids)."""
        sql = (
            "SELECT id, rule, target, verdict, context, held_out FROM hunter_alerts WHERE verdict IS NOT NULL"
            + (f" AND verdict_at >= {TS}" if since is not None else "")
            + " ORDER BY verdict_seq"
        )
        params = [] if since is None else [round(since * 1e6)]
        rows = self._ws.ledger.reader().execute(sql, params).fetchall()
        return [
            {
                "id": r[0],
                "rule": r[1],
                "target": r[2],
                "verdict": r[3],
                "context": json.loads(r[4]) if r[4] else [],
                "held_out": json.loads(r[5]) if r[5] else [],
            }
            for r in rows
        ]

    # -- rules -------------------------------------------------------------------------------------------------
    def rules(self, *, enabled: bool | None = None) -> pd.DataFrame:
        """The rule table (``hunter_rules``) in evaluation order."""
        sql = "SELECT * FROM hunter_rules"
        params: list[Any] = []
        if enabled is not None:
            sql += " WHERE enabled = ?"
            params.append(enabled)
        return self._ws.sql(sql + " ORDER BY position", params)

    def rule(self, rule_id: str) -> Rule:
        """One rule, enabled or not."""
        for r in self._all_rules():
            if r.id == rule_id:
                return r
        raise RuleError(f"no rule {rule_id!r}; see hunter.rules()")

    def add_rule(self, rule: Rule | Mapping[str, Any], *, actor: str) -> Rule:
        """Add a rule at run time (a ``hunter.rule_added`` event). Its examples must behave."""
        new = rule if isinstance(rule, Rule) else rule_from_dict(rule, enabled=True)
        if any(r.id == new.id for r in self._all_rules()):
            raise RuleError(f"a rule {new.id!r} exists already; use update_rule")
        check_examples(new, self._all_rules())
        self._require(
            actor,
            "hunter.rule.add",
            _resource(new.id),
            {"severity": new.severity, "category": new.category, "targets": list(new.targets)},
        )
        self._ws.publish(
            "hunter.rule_added", {"rule": new.as_dict()}, actor=actor, resource=_resource(new.id)
        )
        return self.rule(new.id)

    def update_rule(
        self, rule_id: str, changes: Mapping[str, Any] | None = None, *, actor: str, **fields: Any
    ) -> Rule:
        """Change fields of a rule (``update_rule("x", severity="low", actor=...)``); a ``hunter.rule_updated``."""
        merged = {**(changes or {}), **fields}
        if not merged:
            raise RuleError("update_rule needs at least one field to change")
        if "id" in merged and merged["id"] != rule_id:
            raise RuleError("a rule's id cannot change; add a new rule and disable this one")
        if "enabled" in merged:
            raise RuleError("use enable_rule / disable_rule to switch a rule on or off")
        current = self.rule(rule_id)
        new = current.with_changes(merged)
        check_examples(new, self._all_rules())
        changed = _changed_fields(current, new)
        if not changed:
            return current
        self._require(actor, "hunter.rule.update", _resource(rule_id), {"changed": changed})
        self._ws.publish(
            "hunter.rule_updated",
            {"id": rule_id, "rule": new.as_dict(), "changed": changed},
            actor=actor,
            resource=_resource(rule_id),
        )
        return self.rule(rule_id)

    def disable_rule(self, rule_id: str, *, actor: str, reason: str = "") -> Rule:
        """Stop a rule from running (a ``hunter.rule_disabled`` event; nothing if it is off already)."""
        return self._switch(rule_id, False, actor=actor, reason=reason)

    def enable_rule(self, rule_id: str, *, actor: str, reason: str = "") -> Rule:
        """Run a disabled rule again (a ``hunter.rule_enabled`` event; nothing if it is on already)."""
        return self._switch(rule_id, True, actor=actor, reason=reason)

    def _switch(self, rule_id: str, enabled: bool, *, actor: str, reason: str) -> Rule:
        current = self.rule(rule_id)
        if current.enabled == enabled:
            return current
        topic = "hunter.rule_enabled" if enabled else "hunter.rule_disabled"
        action = "hunter.rule.enable" if enabled else "hunter.rule.disable"
        self._require(actor, action, _resource(rule_id), {"reason": reason})
        self._ws.publish(topic, {"id": rule_id, "reason": reason}, actor=actor, resource=_resource(rule_id))
        return self.rule(rule_id)

    def load_pack(self, pack: Pack | str | Mapping[str, Any], *, actor: str) -> Pack:
        """Load a rule pack (a Pack, YAML text or its mapping) as one ``hunter.pack_loaded`` event.

        New rules are added; rules with an id already present take the pack's definition and keep their
        enabled/disabled state; other rules stay as they are. Every rule's examples must behave.
        """
        if isinstance(pack, str):
            pack = load_pack(pack)
        elif not isinstance(pack, Pack):
            pack = pack_from_dict(pack)
        context = list(pack.rules) + [r for r in self._all_rules() if r.id not in {p.id for p in pack.rules}]
        for rule in pack.rules:
            check_examples(rule, context)
        self._require(
            actor,
            "hunter.pack.load",
            f"hunter:pack:{pack.name}",
            {"version": pack.version, "rules": [r.id for r in pack.rules]},
        )
        self._publish_pack(pack, actor=actor)
        return pack

    def _require(self, actor: str, action: str, resource: str, context: dict[str, Any]) -> None:
        """Governance decides every rule change (a ``governance.decision`` event) before it is published.

        Checked after the rule itself, so a bad rule is refused without logging anything; a refusal raises
        PermissionDenied and leaves only its decision on the ledger. The genesis pack skips this (one event).
        """
        self._governance.check(actor, action, resource=resource, context=context)

    def _publish_pack(self, pack: Pack, *, actor: str) -> None:
        self._ws.publish(
            "hunter.pack_loaded", pack.as_dict(), actor=actor, resource=f"hunter:pack:{pack.name}"
        )

    # -- alerts and evaluation ---------------------------------------------------------------------------------
    def alerts(self, *, rule: str | None = None) -> pd.DataFrame:
        """Alerts (``hunter_alerts``), newest first."""
        sql, params = "SELECT * FROM hunter_alerts", []
        if rule is not None:
            sql += " WHERE rule = ?"
            params.append(rule)
        return self._ws.sql(sql + " ORDER BY ts DESC, id", params)

    def alert_count(self) -> int:
        """How many alerts were raised (rows of ``hunter_alerts``)."""
        row = self._ws.ledger.reader().execute("SELECT count(*) FROM hunter_alerts").fetchone()
        return int(row[0]) if row else 0

    def evaluate(
        self,
        frame: pd.DataFrame,
        *,
        target: str = "chat",
        rules: Sequence[str | Rule | Mapping[str, Any]] | None = None,
    ) -> EvalReport:
        """Precision, recall and confusion per rule and for the pack on a labelled frame (``text``, ``label``).

        ``rules``: None for the enabled rules; otherwise rule ids of this workspace (disabled ones too) and/or
        candidate rules (Rule objects or mappings) that are evaluated without being added.
        """
        return _evaluate(frame, target=target, rules=rules, known=list(self._all_rules()))

    # -- internals ---------------------------------------------------------------------------------------------
    def _rows(self) -> list[tuple[str, bool]]:
        rows = (
            self._ws.ledger.reader()
            .execute("SELECT definition, enabled FROM hunter_rules ORDER BY position")
            .fetchall()
        )
        return [(str(d), bool(e)) for d, e in rows]

    def _all_rules(self) -> tuple[Rule, ...]:
        return self._current()[1]

    def _current(self) -> tuple[int, tuple[Rule, ...], Scanner]:
        built = self._built
        generation = self._generation
        if built is not None and built[0] == generation:
            return built
        with self._lock:
            if self._built is not None and self._built[0] == self._generation:
                return self._built
            generation = self._generation
            rules = tuple(rule_from_dict(json.loads(d), enabled=e) for d, e in self._rows())
            scanner = scanner_for(tuple(r for r in rules if r.enabled))
            self._built = (generation, rules, scanner)
            return self._built

    def _apply_rules(self, con: Any, events: list[Event]) -> None:
        if _apply_rules(con, events):
            self._generation += 1


def _changed_fields(old: Rule, new: Rule) -> list[str]:
    """Fields whose data form differs, including fields back at their default (which as_dict leaves out)."""
    before, after = old.as_dict(), new.as_dict()
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _screen_key(text: str, target: str, now: float) -> str:
    """What identifies one screen for the holdout: its text, target and instant (not an id drawn in ledger
    order, which any unrelated earlier event would change)."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{target}:{round(now * 1e6)}:{digest}"


def _resource(rule_id: str) -> str:
    return f"hunter:rule:{rule_id}"


@dataclass(frozen=True)
class _ModelRule:
    """What an alert needs of a rule, for a finding of a deployed model (``ml.*``) rather than of a rule."""

    id: str
    severity: str
    category: str
    description: str


def _model_rule(findings: list[Finding]) -> _ModelRule:
    worst = max(findings, key=lambda f: severity_rank(f.severity))
    detail = f" ({worst.detail})" if worst.detail else ""
    return _ModelRule(worst.rule, worst.severity, worst.category, f"Flagged by a deployed model{detail}")


def _alert_payload(
    rule: Rule | _ModelRule, findings: list[Finding], actor: str, resource: str | None, scan_id: str
) -> dict[str, Any]:
    spans = [
        {"start": f.start, "end": f.end, "line": f.line, "column": f.column} for f in findings[:MAX_SPANS]
    ]
    excerpts = list(dict.fromkeys(f.excerpt for f in findings))[:MAX_EXCERPTS]
    payload: dict[str, Any] = {
        "rule": rule.id,
        "severity": rule.severity,
        "category": rule.category,
        "description": rule.description,
        "target": findings[0].target,
        "actor": actor,
        "resource": resource,
        "count": len(findings),
        "spans": spans,
        "excerpts": excerpts,
        "scan": scan_id,
    }
    details = sorted({f.detail for f in findings if f.detail})
    if details:
        payload["details"] = details
    if len(findings) > MAX_SPANS:
        payload["spans_truncated"] = len(findings) - MAX_SPANS
    return payload


# -- projections -----------------------------------------------------------------------------------------------
def _rule_row(
    data: Mapping[str, Any], *, position: int, enabled: bool, source: str, version: int, e: Event
) -> list[Any]:
    definition = {k: v for k, v in data.items() if k != "enabled"}
    targets = definition.get("targets", "all")
    return [
        definition["id"],
        position,
        definition.get("description", ""),
        definition.get("severity", ""),
        definition.get("category", "other"),
        json.dumps(list(TARGETS) if targets == "all" else list(targets)),
        enabled,
        source,
        version,
        canonical_json(definition),
        e.actor,
        e.ts_us,
        e.id,
    ]


_INSERT_RULE = f"(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {TS}, ?)"


def _apply_rules(con: Any, events: list[Event]) -> bool:
    """Projection: ``hunter_rules`` from the rule events. Returns whether any rule changed."""
    changed = False
    for e in events:
        if e.topic not in _RULE_TOPICS:
            continue
        changed = True
        p = e.payload
        if e.topic == "hunter.pack_loaded":
            existing = {
                str(r[0]): (bool(r[1]), int(r[2]), int(r[3]))
                for r in con.execute("SELECT id, enabled, version, position FROM hunter_rules").fetchall()
            }
            top = max((v[2] for v in existing.values()), default=-1)
            fresh, params = [], []
            for data in p["rules"]:
                rid = data["id"]
                if rid in existing:
                    enabled, version, position = existing[rid]
                    row = _rule_row(
                        data,
                        position=position,
                        enabled=enabled,
                        source=f"pack:{p['name']}",
                        version=version + 1,
                        e=e,
                    )
                    con.execute(
                        "UPDATE hunter_rules SET description = ?, severity = ?, category = ?, targets = ?, "
                        "source = ?, version = ?, definition = ?, updated_by = ?, "
                        f"updated_at = {TS}, event_id = ? WHERE id = ?",
                        [*row[2:6], *row[7:13], rid],
                    )
                else:
                    top += 1
                    fresh.append(_INSERT_RULE)
                    params += _rule_row(
                        data,
                        position=top,
                        enabled=bool(data.get("enabled", True)),
                        source=f"pack:{p['name']}",
                        version=1,
                        e=e,
                    )
            if fresh:
                con.execute(f"INSERT INTO hunter_rules VALUES {', '.join(fresh)}", params)
        elif e.topic == "hunter.rule_added":
            row = con.execute("SELECT coalesce(max(position), -1) + 1 FROM hunter_rules").fetchone()
            con.execute(
                f"INSERT INTO hunter_rules VALUES {_INSERT_RULE}",
                _rule_row(p["rule"], position=int(row[0]), enabled=True, source="added", version=1, e=e),
            )
        elif e.topic == "hunter.rule_updated":
            row = _rule_row(p["rule"], position=0, enabled=True, source="", version=0, e=e)
            con.execute(
                "UPDATE hunter_rules SET description = ?, severity = ?, category = ?, targets = ?, "
                f"version = version + 1, definition = ?, updated_by = ?, updated_at = {TS}, "
                "event_id = ? WHERE id = ?",
                [*row[2:6], *row[9:13], p["id"]],
            )
        else:
            con.execute(
                f"UPDATE hunter_rules SET enabled = ?, updated_by = ?, updated_at = {TS}, "
                "event_id = ? WHERE id = ?",
                [e.topic == "hunter.rule_enabled", e.actor, e.ts_us, e.id, p["id"]],
            )
    return changed


def _apply_alerts(con: Any, events: list[Event]) -> None:
    """Projection: ``hunter_alerts`` from ``hunter.alert``, the ``hunter.notification`` ending its fan-out and the
    ``hunter.feedback`` giving its verdict."""
    for e in events:
        p = e.payload
        if e.topic == "hunter.alert":
            con.execute(
                f"INSERT INTO hunter_alerts VALUES (?, {TS}, ?, ?, ?, ?, ?, ?, ?, ?, "
                "NULL, NULL, NULL, ?, ?, NULL, NULL, NULL, NULL, NULL)",
                [
                    e.id,
                    e.ts_us,
                    p["rule"],
                    p["severity"],
                    p["target"],
                    p["actor"],
                    p.get("resource"),
                    p["count"],
                    p["scan"],
                    json.dumps(p.get("excerpts", []), ensure_ascii=False),
                    json.dumps(p["context"]) if "context" in p else None,
                    json.dumps(p["held_out"]) if p.get("held_out") else None,
                ],
            )
        elif e.topic == "hunter.feedback":
            con.execute(
                "UPDATE hunter_alerts SET verdict = ?, verdict_by = ?, verdict_note = ?, "
                f"verdict_at = {TS}, verdict_seq = ? WHERE id = ?",
                [p["verdict"], e.actor, p.get("note", ""), e.ts_us, e.seq, p["alert"]],
            )
        elif e.topic == "hunter.notification":
            con.execute(
                f"UPDATE hunter_alerts SET notified_at = {TS}, task_id = ?, memory_path = ? WHERE id = ?",
                [e.ts_us, p.get("task"), p.get("memory_path"), p["alert"]],
            )
