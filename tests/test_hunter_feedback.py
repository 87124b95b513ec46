"""Analyst feedback on Hunter's alerts and the lessons Hunter applies: verdicts are governed events in the
alerts table; bad feedback is one clear error and loses nothing; a lesson silences the findings its allowlist
covers (except held-out screens, which name it), and never changes what is masked."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import grace

from grace_core import FeedbackError, PermissionDenied, Workspace, open_workspace
from grace_core.hunter import context_words, default_scanner

EXAMPLE = "The vendor documentation uses the example key AKIAIOSFODNN7EXAMPLE in every tutorial."
LEAK = "Deploying now, the credentials are AKIAZ3MHQ7RBX2LPWK4D for the billing job."
ALLOW_EXAMPLE = {
    "target": "hunter",
    "rule": "aws-access-key-id",
    "cause": "false_positive",
    "suppress": {"context": ["example"]},
}


@pytest.fixture
def team(ws: Workspace) -> Workspace:
    ws.auth.register("ada", "Ada-admin-pass-9x!", role="admin", by="system")
    ws.auth.register("rex", "Rex-researcher-pass-9x!", role="researcher", by="system")
    ws.auth.register("val", "Val-viewer-pass-9x!", role="viewer", by="system")
    return ws


def alert_of(ws: Workspace, path: str, text: str) -> str:
    ws.memory.write(path, text, actor="rex")
    alerts = ws.hunter.alerts()
    return str(alerts[alerts.resource == f"memory:{path}"].id.iloc[0])


def test_a_verdict_is_a_governed_event_in_the_alerts_table(team: Workspace) -> None:
    ws = team
    alert = alert_of(ws, "/docs/aws.md", EXAMPLE)
    event = ws.hunter.feedback(alert, "false_positive", actor="rex", note="the documented example key")
    assert (event.topic, event.actor, event.payload["rule"]) == (
        "hunter.feedback",
        "rex",
        "aws-access-key-id",
    )
    row = ws.hunter.alerts().set_index("id").loc[alert]
    assert (row.verdict, row.verdict_by, row.verdict_note) == (
        "false_positive",
        "rex",
        "the documented example key",
    )
    decision = ws.ledger.get(event.parent_id) if event.parent_id else None
    decisions = [
        (e.actor, e.payload["action"], e.payload["effect"])
        for e in ws.ledger.events(topic="governance.decision")
    ]
    assert ("rex", "hunter.feedback", "allow") in decisions
    assert decision is None or decision.topic != "hunter.feedback"
    # A later verdict replaces the earlier one; both stay on the ledger.
    ws.hunter.feedback(alert, "confirmed", actor="ada")
    assert ws.hunter.alerts().set_index("id").loc[alert].verdict == "confirmed"
    assert len(ws.ledger.events(topic="hunter.feedback")) == 2
    (judged,) = ws.hunter.verdicts()
    assert (judged["id"], judged["verdict"]) == (alert, "confirmed")
    assert "example" in judged["context"]
    assert "documentation" in judged["context"]


@pytest.mark.parametrize(
    ("alert", "verdict", "actor", "error", "message"),
    [
        ("no-such-alert", "confirmed", "rex", FeedbackError, "no alert 'no-such-alert'"),
        (None, "maybe", "rex", FeedbackError, "a verdict is one of confirmed, false_positive, not 'maybe'"),
        (None, "confirmed", "val", PermissionDenied, "val may not hunter.feedback"),
    ],
)
def test_bad_feedback_is_refused_and_loses_nothing(
    team: Workspace, alert: str | None, verdict: str, actor: str, error: type[Exception], message: str
) -> None:
    ws = team
    real = alert_of(ws, "/docs/aws.md", EXAMPLE)
    ws.hunter.feedback(real, "false_positive", actor="rex")
    head = ws.ledger.head[0]
    with pytest.raises(error, match=message):
        ws.hunter.feedback(alert or real, verdict, actor=actor)
    assert ws.hunter.alerts().set_index("id").loc[real].verdict == "false_positive"
    published = [e.topic for e in ws.ledger.events(since=head)]
    # A refusal by governance leaves only its decision; a malformed request leaves nothing at all.
    assert published == (["governance.decision"] if error is PermissionDenied else [])


def test_context_words_are_plain_words_outside_every_finding() -> None:
    text = (
        "key AKIAZ3MHQ7RBX2LPWK4D and secret wJalrXUtnFEMIK7MDENGbPxRfiCYZ9KEYQXA2B nearby, far " + "x" * 200
    )
    findings = default_scanner().scan(text, target="chat")
    words = context_words(text, findings, [(f.start, f.end) for f in findings])
    assert {"key", "and", "secret", "nearby", "far"} <= set(words)
    assert not any(w.upper() in text.upper() and len(w) > 15 for w in words)
    assert not any("akia" in w or "wjalr" in w for w in words)


def test_a_lesson_silences_its_context_and_keeps_alerting_elsewhere(team: Workspace) -> None:
    ws = team
    ws.loops.set_param("learning", "holdout_share", 1e-9, actor="system")  # nothing held out
    lesson = ws.learning.add_lesson("Example keys are not leaks.", effect=ALLOW_EXAMPLE, actor="ada")
    before = ws.hunter.alert_count()
    ws.memory.write("/docs/example.md", EXAMPLE, actor="rex")
    assert ws.hunter.alert_count() == before  # silenced
    (silenced,) = ws.ledger.events(topic="hunter.alert_suppressed")
    assert (silenced.payload["rule"], silenced.payload["lessons"]) == ("aws-access-key-id", [lesson])
    # What is masked does not change: the stored note still hides the key.
    assert "AKIAIOSFODNN7EXAMPLE" not in ws.memory.read("/docs/example.md").content
    ws.memory.write("/team/leak.md", LEAK, actor="rex")  # no allowlisted word nearby: alerted
    assert ws.hunter.alert_count() == before + 1
    ws.learning.add_lesson(
        "A second lesson.",
        effect={**ALLOW_EXAMPLE, "rule": "github-token", "suppress": {"context": ["example"]}},
        actor="ada",
    )
    assert {e["rule"] for _, e in ws.learning.hunter_lessons()} == {"aws-access-key-id", "github-token"}
    assert ws.learning.effects() == {}  # Hunter's lessons are not the executor's


def test_held_out_screens_alert_and_name_the_lesson(team: Workspace) -> None:
    ws = team
    ws.loops.set_param("learning", "holdout_share", 0.5, actor="system")
    lesson = ws.learning.add_lesson("Example keys are not leaks.", effect=ALLOW_EXAMPLE, actor="ada")
    for i in range(30):
        ws.clock.advance(60)
        ws.memory.write(f"/docs/example-{i}.md", f"{EXAMPLE} (copy {i})", actor="rex")
    held = ws.hunter.alerts()
    silenced = ws.ledger.events(topic="hunter.alert_suppressed")
    assert len(held) + len(silenced) == 30
    assert 5 <= len(held) <= 25  # about half, seeded
    assert all(h == f'["{lesson}"]' for h in held.held_out)
    # Verdicts on the held-out alerts are the lesson's measured outcome.
    for alert in held.id[:4]:
        ws.hunter.feedback(str(alert), "false_positive", actor="rex")
    (outcome,) = ws.learning.pending_outcomes()
    assert outcome == {
        "rule_id": lesson,
        "silenced": {"alerts": 4, "confirmed": 0},
        "alerts": {"alerts": 4, "confirmed": 0},
    }


def test_a_severity_lesson_changes_how_urgent_an_alert_is(team: Workspace) -> None:
    ws = team
    ws.learning.add_lesson(
        "Example keys are low.",
        effect={"target": "hunter", "rule": "aws-access-key-id", "severity": "low"},
        actor="ada",
    )
    ws.memory.write("/docs/aws.md", EXAMPLE, actor="rex")
    (alert,) = ws.ledger.events(topic="hunter.alert")
    assert alert.payload["severity"] == "low"
    assert len(alert.payload["lessons"]) == 1


def test_the_command_line_records_feedback_and_refuses_bad_feedback_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    with open_workspace(path) as ws:
        ws.auth.register("ada", "Ada-admin-pass-9x!", role="admin", by="system")
        ws.auth.register("val", "Val-viewer-pass-9x!", role="viewer", by="system")
        ws.memory.write("/docs/aws.md", EXAMPLE, actor="ada")
        alert = str(ws.hunter.alerts().id.iloc[0])
    done = grace("hunter", "feedback", alert, "false_positive", "--by", "ada", "--workspace", path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{alert} false_positive (event ")
    for args, message in (
        (("nope", "confirmed"), "no alert 'nope'"),
        ((alert, "maybe"), "a verdict is one of confirmed, false_positive"),
        ((alert, "confirmed", "--by", "val"), "val may not hunter.feedback"),
    ):
        refused = grace("hunter", "feedback", *args, "--workspace", path)
        assert refused.returncode == 2
        assert len(refused.stderr.splitlines()) == 1
        assert refused.stderr.startswith("grace: error:")
        assert message in refused.stderr
    with open_workspace(path, snapshot=True) as snap:
        assert snap.hunter.alerts().verdict.tolist() == ["false_positive"]
        assert len(snap.ledger.events(topic="hunter.feedback")) == 1
