"""Governance: policies as data, precedence, globs, conditions, explained and logged decisions, approvals,
the index after policy changes, replay, the benchmark peers, and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import support
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grace_core import ManualClock, Workspace, open_workspace
from grace_core.errors import PermissionDenied, PolicyError
from grace_core.governance import (
    EFFECTS,
    ROLES,
    Condition,
    Policy,
    PolicyIndex,
    compile_glob,
    default_pack,
    load_policies,
)
from grace_core.workspace import projection_differences, replay

PASSWORD = "correct horse battery staple"
USERS = {"ada": "admin", "bob": "admin", "rita": "researcher", "vic": "viewer"}


def _governed(ws: Workspace) -> Workspace:
    """Seed the default pack (a no-op where genesis did it) and register the test users through auth."""
    ws.governance.seed_defaults()
    for name, role in USERS.items():
        ws.auth.register(name, f"{PASSWORD} {name}", role=role, by="system")
    return ws


@pytest.fixture
def gws() -> Iterator[Workspace]:
    """A deterministic in-memory workspace with the default pack and four users."""
    ws = open_workspace(":memory:", clock=ManualClock(), seed=7)
    try:
        yield _governed(ws)
    finally:
        ws.close()


@pytest.fixture
def live_ws() -> Iterator[Workspace]:
    """A live workspace (wall clock, delivery on the dispatcher thread) with the pack and the users."""
    ws = open_workspace(":memory:", live=True)
    try:
        yield _governed(ws)
    finally:
        ws.close()


def topics(ws: Workspace, pattern: str = "governance.*") -> list[str]:
    return [e.topic for e in ws.ledger.events(topic=pattern)]


def index(*policies: dict[str, Any]) -> PolicyIndex:
    return PolicyIndex([Policy.from_dict(p) for p in policies])


# -- the default pack ----------------------------------------------------------------------------------------
def test_default_pack_is_loaded_in_one_event_and_only_once(gws: Workspace) -> None:
    assert topics(gws, "governance.pack_loaded") == ["governance.pack_loaded"]
    event = gws.ledger.events(topic="governance.pack_loaded")[0]
    assert event.payload["name"] == "default"
    assert [p["id"] for p in event.payload["policies"]] == [p.id for p in default_pack()]
    table = gws.governance.policies()
    assert sorted(table["id"]) == sorted(p.id for p in default_pack())
    assert set(table["source"]) == {"pack:default"}
    assert all(table["description"].str.len() > 40)  # every default policy explains itself
    gws.governance.seed_defaults()
    assert topics(gws, "governance.pack_loaded") == ["governance.pack_loaded"]


@pytest.mark.parametrize(
    ("actor", "action", "resource", "context", "effect", "policy"),
    [
        ("ada", "memory.write", "/system/prompt.md", None, "allow", "admins-everything"),
        ("ada", "model.deploy", "model:m1", None, "allow", "admins-everything"),
        ("ada", "sandbox.execute", None, {"network": True, "timeout_s": 5}, "deny", "sandbox-no-network"),
        ("rita", "memory.write", "/system/prompt.md", None, "deny", "system-memory-admins-only"),
        ("rita", "memory.write", "/system", None, "deny", "system-memory-admins-only"),
        ("rita", "memory.write", "/systemic/notes.md", None, "allow", "researchers-memory"),
        ("rita", "memory.write", "/projects/alpha/notes.md", None, "allow", "researchers-memory"),
        ("rita", "memory.read", "/system/prompt.md", None, "allow", "readers"),
        ("rita", "chat.send", None, None, "allow", "researchers-chat"),
        (
            "rita",
            "sandbox.execute",
            None,
            {"network": False, "timeout_s": 60},
            "allow",
            "researchers-sandbox",
        ),
        ("rita", "sandbox.execute", None, {"network": False, "timeout_s": 900}, "review", None),
        ("rita", "task.create", "task:1", None, "allow", "researchers-tasks"),
        ("rita", "loop.step", "loop:reflection", None, "allow", "researchers-loops"),
        ("rita", "loop.set_param", "loop:reflection", {"key": "interval"}, "review", None),
        ("rita", "model.deploy", "model:m1", None, "review", "researchers-model-deploy-review"),
        ("rita", "governance.policy.add", "policy:x", None, "deny", None),
        ("vic", "memory.read", "/projects/alpha/notes.md", None, "allow", "readers"),
        ("vic", "ledger.read", None, None, "allow", "readers"),
        ("vic", "memory.write", "/projects/alpha/notes.md", None, "deny", None),
        ("vic", "chat.send", None, None, "allow", "viewers-ask"),
        ("vic", "chat.read", "conversation:1", {"own": True}, "allow", "readers"),
        ("vic", "chat.read", "conversation:1", {"own": False}, "deny", "chat-read-own-only"),
        ("ada", "chat.read", "conversation:1", {"own": False}, "allow", "admins-everything"),
        ("meta", "loop.set_param", "loop:reflection", None, "allow", "system-engines"),
        ("hunter", "memory.write", "/security/alerts/1.md", None, "allow", "system-engines"),
        ("hunter", "memory.write", "/system/rules.md", None, "deny", "system-memory-admins-only"),
        ("mallory", "chat.send", None, None, "deny", None),
    ],
)
def test_default_pack_governs_each_role_as_documented(
    gws: Workspace,
    actor: str,
    action: str,
    resource: str | None,
    context: Any,
    effect: str,
    policy: str | None,
) -> None:
    decision = gws.governance.check(actor, action, resource, context, record="none", enforce=False)
    assert decision.effect == effect, decision.reasons
    if policy is not None:
        assert decision.policy_ids[0] == policy
    if effect == "deny" and policy is None:
        assert decision.policy_ids == ()
        assert "no policy allows this (default deny)" in decision.reasons[0]


def test_the_default_pack_file_round_trips_through_the_loader() -> None:
    pack = default_pack()
    assert load_policies([p.as_dict() for p in pack]) == pack
    assert {p.effect for p in pack} == set(EFFECTS)


# -- precedence and explanations -----------------------------------------------------------------------------
def test_deny_beats_review_beats_allow_whatever_the_priorities() -> None:
    ix = index(
        {
            "id": "allow-high",
            "effect": "allow",
            "roles": ["researcher"],
            "actions": ["x.*"],
            "priority": 1000,
        },
        {"id": "allow-low", "effect": "allow", "roles": ["researcher"], "actions": ["x.do"], "priority": -1},
        {"id": "review", "effect": "review", "roles": ["researcher"], "actions": ["x.do", "x.check"]},
        {"id": "deny", "effect": "deny", "actors": ["*"], "actions": ["x.do"], "priority": -1000},
    )
    do = ix.evaluate("rita", "researcher", "x.do")
    assert do.effect == "deny"
    assert do.policy_ids == ("deny",)
    assert dict(do.matched) == {
        "deny": "deny",
        "review": "review",
        "allow-high": "allow",
        "allow-low": "allow",
    }
    assert "deny beats review and allow" in do.reasons[-1]
    check = ix.evaluate("rita", "researcher", "x.check")
    assert check.effect == "review"
    assert check.policy_ids == ("review",)
    assert any("review beats allow: 'allow-high' (allow)" in r for r in check.reasons)
    other = ix.evaluate("rita", "researcher", "x.other")
    assert (other.effect, other.policy_ids) == ("allow", ("allow-high",))
    assert other.reasons[-1] == "no deny or review policy matched"


def test_priority_orders_policies_within_an_effect() -> None:
    ix = index(
        {"id": "b-low", "effect": "allow", "roles": ["viewer"], "actions": ["**"], "priority": 1},
        {"id": "a-low", "effect": "allow", "roles": ["viewer"], "actions": ["**"], "priority": 1},
        {"id": "z-high", "effect": "allow", "roles": ["viewer"], "actions": ["**"], "priority": 9},
    )
    decision = ix.evaluate("vic", "viewer", "any.thing")
    assert decision.policy_ids == ("z-high", "a-low", "b-low")
    assert [r.split("'")[1] for r in decision.reasons[:3]] == ["z-high", "a-low", "b-low"]


def test_default_deny_when_nothing_matches_and_says_so() -> None:
    assert PolicyIndex([]).evaluate("ada", "admin", "chat.send").effect == "deny"
    decision = index({"id": "p", "effect": "allow", "roles": ["admin"], "actions": ["chat.*"]}).evaluate(
        "rita", "researcher", "chat.send", "conversation:1"
    )
    assert decision.effect == "deny"
    assert decision.reasons == (
        "no policy allows this (default deny): nothing allows 'rita' (role: researcher) to chat.send on "
        "conversation:1",
    )


def test_explanations_name_the_policy_the_matching_action_and_the_conditions() -> None:
    ix = index(
        {
            "id": "long-runs",
            "effect": "review",
            "roles": ["researcher"],
            "actions": ["sandbox.execute", "model.deploy"],
            "conditions": [{"key": "timeout_s", "op": "gt", "value": 300}],
        }
    )
    decision = ix.evaluate("rita", "researcher", "sandbox.execute", None, {"timeout_s": 301})
    assert decision.reasons == (
        "policy 'long-runs' requires an admin's approval for researchers to sandbox.execute when timeout_s > 300",
        "no deny policy matched",
        "it may proceed once an admin (not the requester) approves it",
    )


def test_actors_and_roles_select_whom_a_policy_is_about() -> None:
    ix = index(
        {"id": "named", "effect": "allow", "actors": ["carol"], "actions": ["a.b"]},
        {"id": "any-role", "effect": "allow", "roles": ["*"], "actions": ["c.d"]},
        {"id": "anyone", "effect": "allow", "actors": ["*"], "actions": ["e.f"]},
    )
    assert ix.evaluate("carol", None, "a.b").effect == "allow"
    assert ix.evaluate("dave", "admin", "a.b").effect == "deny"
    assert ix.evaluate("dave", "viewer", "c.d").effect == "allow"
    assert ix.evaluate("dave", None, "c.d").effect == "deny"  # '*' in roles needs some role
    assert ix.evaluate("dave", None, "e.f").effect == "allow"  # '*' in actors is anyone at all


# -- globs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "sep", "yes", "no"),
    [
        ("/system/**", "/", ["/system", "/system/a", "/system/a/b.md"], ["/systemic", "/other/system", "/"]),
        (
            "/projects/*/notes.md",
            "/",
            ["/projects/a/notes.md"],
            ["/projects/a/b/notes.md", "/projects/notes.md"],
        ),
        ("/a/**/b", "/", ["/a/b", "/a/x/b", "/a/x/y/b"], ["/a/bb", "/a/x/c"]),
        ("**/secret.md", "/", ["secret.md", "/secret.md", "/a/b/secret.md"], ["/a/not-secret.md"]),
        ("/notes/?.md", "/", ["/notes/a.md"], ["/notes/ab.md", "/notes//.md"]),
        ("/exact.md", "/", ["/exact.md"], ["/exact.mdx", "/exact"]),
        ("memory.*", ".", ["memory.read", "memory.write"], ["memory.item.write", "memory", "memoryx.read"]),
        ("memory.**", ".", ["memory", "memory.read", "memory.item.write"], ["memoryx.read"]),
        ("**.read", ".", ["read", "memory.read", "hunter.rule.read"], ["memory.reader", "memory.read.all"]),
        ("**", ".", ["a", "a.b.c"], []),
        ("mem*.re?d", ".", ["memory.read", "mem.reed"], ["memory.item.read", "memory.rad"]),
    ],
)
def test_glob_semantics(pattern: str, sep: str, yes: list[str], no: list[str]) -> None:
    match = compile_glob(pattern, sep)
    assert [t for t in yes if not match(t)] == []
    assert [t for t in no if match(t)] == []


def test_an_action_entry_can_carry_its_resource() -> None:
    ix = index(
        {"id": "entry", "effect": "allow", "roles": ["viewer"], "actions": ["memory.write:/scratch/**"]},
        {
            "id": "both",
            "effect": "allow",
            "roles": ["viewer"],
            "actions": ["memory.read:/shared/**"],
            "resources": ["**/*.md"],
        },
    )
    assert ix.evaluate("vic", "viewer", "memory.write", "/scratch/a/b").effect == "allow"
    assert ix.evaluate("vic", "viewer", "memory.write:/scratch/a").effect == "allow"  # the combined spelling
    assert ix.evaluate("vic", "viewer", "memory.write", "/notes/a").effect == "deny"
    assert ix.evaluate("vic", "viewer", "memory.write").effect == "deny"  # no resource, no match
    assert ix.evaluate("vic", "viewer", "memory.read", "/shared/x/a.md").effect == "allow"  # both constraints
    assert ix.evaluate("vic", "viewer", "memory.read", "/shared/x/a.txt").effect == "deny"
    assert ix.evaluate("vic", "viewer", "memory.read", "/private/a.md").effect == "deny"


def _ref_segment(pattern: str, text: str) -> bool:
    if not pattern:
        return not text
    head = pattern[0]
    if head == "*":
        return any(_ref_segment(pattern[1:], text[k:]) for k in range(len(text) + 1))
    if not text:
        return False
    return (head == "?" or head == text[0]) and _ref_segment(pattern[1:], text[1:])


def _ref_glob(pattern: str, text: str, sep: str) -> bool:
    """A reference matcher over segments: '**' takes any number of whole segments."""
    pats, segs = pattern.split(sep), text.split(sep)

    def match(i: int, j: int) -> bool:
        if i == len(pats):
            return j == len(segs)
        if pats[i] == "**":
            return any(match(i + 1, k) for k in range(j, len(segs) + 1))
        return j < len(segs) and _ref_segment(pats[i], segs[j]) and match(i + 1, j + 1)

    return match(0, 0)


_SEGMENTS = st.sampled_from(["a", "b", "ab", "*", "a*", "*b", "?", "?b", "**"])


@st.composite
def _globs(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_SEGMENTS, min_size=1, max_size=4))
    cleaned = [p for i, p in enumerate(parts) if not (p == "**" and i > 0 and parts[i - 1] == "**")]
    return "/".join(cleaned)


@settings(max_examples=300, deadline=None)
@given(pattern=_globs(), text=st.lists(st.sampled_from(["a", "b", "ab", "ba", "abb", ""]), max_size=4))
def test_compiled_globs_agree_with_a_segment_by_segment_matcher(pattern: str, text: list[str]) -> None:
    subject = "/".join(text)
    assert compile_glob(pattern, "/")(subject) == _ref_glob(pattern, subject, "/")
    dotted = pattern.replace("/", ".")
    assert compile_glob(dotted, ".")(subject.replace("/", ".")) == _ref_glob(
        dotted, subject.replace("/", "."), "."
    )


# -- conditions ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("condition", "context", "holds"),
    [
        ({"key": "network", "op": "eq", "value": True}, {"network": True}, True),
        ({"key": "network", "op": "eq", "value": True}, {"network": 1}, False),  # a boolean is not a number
        ({"key": "n", "op": "eq", "value": 1}, {"n": 1.0}, True),
        ({"key": "n", "op": "eq", "value": 1}, {"n": True}, False),
        ({"key": "n", "op": "eq", "value": 1}, {}, False),
        ({"key": "name", "op": "ne", "value": "x"}, {"name": "y"}, True),
        ({"key": "name", "op": "ne", "value": "x"}, {"name": "x"}, False),
        ({"key": "name", "op": "ne", "value": "x"}, {}, False),  # missing is never a match
        ({"key": "target", "op": "in", "value": ["staging", "dev"]}, {"target": "dev"}, True),
        ({"key": "target", "op": "in", "value": ["staging", "dev"]}, {"target": "production"}, False),
        ({"key": "n", "op": "in", "value": [1, "1"]}, {"n": True}, False),
        ({"key": "target", "op": "not_in", "value": ["production"]}, {"target": "staging"}, True),
        ({"key": "target", "op": "not_in", "value": ["production"]}, {"target": "production"}, False),
        ({"key": "target", "op": "not_in", "value": ["production"]}, None, False),
        ({"key": "timeout_s", "op": "gt", "value": 300}, {"timeout_s": 301}, True),
        ({"key": "timeout_s", "op": "gt", "value": 300}, {"timeout_s": 300}, False),
        ({"key": "timeout_s", "op": "ge", "value": 300}, {"timeout_s": 300.0}, True),
        ({"key": "timeout_s", "op": "lt", "value": 300}, {"timeout_s": "10"}, False),  # no coercion
        ({"key": "timeout_s", "op": "le", "value": 300}, {"timeout_s": False}, False),
        ({"key": "version", "op": "lt", "value": "b"}, {"version": "a"}, True),
        ({"key": "params.interval", "op": "lt", "value": 5}, {"params": {"interval": 1}}, True),
        ({"key": "params.interval", "op": "lt", "value": 5}, {"params": 1}, False),
        ({"key": "ticket", "op": "exists"}, {"ticket": "T-1"}, True),
        ({"key": "ticket", "op": "exists"}, {"ticket": None}, False),
        ({"key": "ticket", "op": "exists", "value": False}, {}, True),
        (
            {"key": "host", "op": "matches", "value": r"[a-z]+\.example\.org"},
            {"host": "api.example.org"},
            True,
        ),
        (
            {"key": "host", "op": "matches", "value": r"[a-z]+\.example\.org"},
            {"host": "x.example.org.evil"},
            False,
        ),
        ({"key": "host", "op": "matches", "value": "1"}, {"host": 1}, False),
    ],
)
def test_condition_ops(condition: dict[str, Any], context: Any, holds: bool) -> None:
    assert Condition.from_dict(condition).compile()(context) is holds
    ix = index(
        {"id": "c", "effect": "allow", "roles": ["viewer"], "actions": ["x.y"], "conditions": [condition]}
    )
    assert ix.evaluate("vic", "viewer", "x.y", None, context).allowed is holds


def test_all_conditions_must_hold() -> None:
    ix = index(
        {
            "id": "both",
            "effect": "allow",
            "roles": ["viewer"],
            "actions": ["x.y"],
            "conditions": [{"key": "a", "op": "eq", "value": 1}, {"key": "b", "op": "eq", "value": 2}],
        }
    )
    assert ix.evaluate("vic", "viewer", "x.y", None, {"a": 1, "b": 2}).allowed
    assert not ix.evaluate("vic", "viewer", "x.y", None, {"a": 1, "b": 3}).allowed


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"id": "p", "effect": "permit", "roles": ["admin"], "actions": ["a"]}, "unknown effect 'permit'"),
        ({"id": "p", "effect": "allow", "roles": ["admin"], "actions": ["Memory.Write"]}, "bad action glob"),
        (
            {"id": "p", "effect": "allow", "roles": ["admin"], "actions": ["memory.wr**"]},
            "must be a whole segment",
        ),
        ({"id": "p", "effect": "allow", "roles": ["admin"], "actions": ["a:/x/[ab]"]}, "only the wildcards"),
        (
            {"id": "p", "effect": "allow", "roles": ["admin"], "actions": ["a"], "resources": ["/a/**/**"]},
            "'\\*\\*/\\*\\*'",
        ),
        ({"id": "p", "effect": "allow", "roles": ["admin"], "actions": []}, "at least one action"),
        ({"id": "p", "effect": "allow", "actions": ["a"]}, "roles and/or actors"),
        ({"id": "p", "effect": "allow", "roles": ["admins"], "actions": ["a"]}, "unknown role"),
        ({"id": "p", "effect": "allow", "actors": ["bo*"], "actions": ["a"]}, "bad actor"),
        ({"id": "P Q", "effect": "allow", "roles": ["admin"], "actions": ["a"]}, "bad policy id"),
        (
            {"id": "p", "effect": "allow", "roles": ["admin"], "actions": ["a"], "efect": "deny"},
            "unknown field",
        ),
        (
            {"id": "p", "effect": "allow", "roles": ["admin"], "actions": ["a"], "priority": "high"},
            "priority",
        ),
        (
            {
                "id": "p",
                "effect": "allow",
                "roles": ["admin"],
                "actions": ["a"],
                "conditions": [{"key": "a", "op": "like", "value": 1}],
            },
            "unknown condition op 'like'",
        ),
        (
            {
                "id": "p",
                "effect": "allow",
                "roles": ["admin"],
                "actions": ["a"],
                "conditions": [{"key": "a", "op": "in", "value": "x"}],
            },
            "must be a list",
        ),
        (
            {
                "id": "p",
                "effect": "allow",
                "roles": ["admin"],
                "actions": ["a"],
                "conditions": [{"key": "a", "op": "matches", "value": "("}],
            },
            "not a valid regular expression",
        ),
        (
            {
                "id": "p",
                "effect": "allow",
                "roles": ["admin"],
                "actions": ["a"],
                "conditions": [{"key": "a", "op": "gt", "value": [1]}],
            },
            "a number or a string",
        ),
        (
            {
                "id": "p",
                "effect": "allow",
                "roles": ["admin"],
                "actions": ["a"],
                "conditions": [{"key": "a;drop", "op": "eq", "value": 1}],
            },
            "bad condition key",
        ),
    ],
)
def test_malformed_policies_are_refused_with_a_clear_policy_error(
    policy: dict[str, Any], message: str
) -> None:
    with pytest.raises(PolicyError, match=message):
        Policy.from_dict(policy)


def test_bad_requests_are_policy_errors(gws: Workspace) -> None:
    with pytest.raises(PolicyError, match="bad action"):
        gws.governance.check("ada", "memory.*", record="none", enforce=False)
    with pytest.raises(PolicyError, match="context"):
        gws.governance.check("ada", "chat.send", None, ["not", "a", "mapping"], enforce=False)  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="cannot be logged"):
        gws.governance.check("ada", "chat.send", None, {"when": object()}, enforce=False)
    with pytest.raises(PolicyError, match="duplicate policy id"):
        load_policies("- {id: a, effect: allow, roles: [admin], actions: [x]}\n" * 2)


# -- decisions are logged ------------------------------------------------------------------------------------
def test_check_logs_an_explained_decision_and_a_what_if_logs_nothing(gws: Workspace) -> None:
    before = gws.ledger.head[0]
    gws.governance.check("rita", "memory.write", "/system/a.md", record="none", enforce=False)
    assert gws.ledger.head[0] == before
    decision = gws.governance.check(
        "rita", "memory.write", "/system/a.md", {"reason": "typo fix"}, enforce=False
    )
    event = gws.ledger.events(topic="governance.decision")[-1]
    assert event.seq == before + 1
    assert event.actor == "rita"
    assert event.resource == "/system/a.md"
    assert event.payload == {
        "action": "memory.write",
        "resource": "/system/a.md",
        "context": {"reason": "typo fix"},
        "role": "researcher",
        "effect": "deny",
        "policy_ids": ["system-memory-admins-only"],
        "reasons": list(decision.reasons),
        "matched": [["system-memory-admins-only", "deny"], ["researchers-memory", "allow"]],
        "approval_id": None,
    }
    frame = gws.sql(
        "SELECT payload->>'effect' AS effect, count(*) AS n FROM events WHERE topic = 'governance.decision' "
        "AND actor = 'rita' GROUP BY ALL"
    )
    assert frame.to_dict("records") == [{"effect": "deny", "n": 1}]


def test_check_returns_allowed_decisions_and_raises_on_deny(gws: Workspace) -> None:
    assert gws.governance.check("rita", "chat.send").policy_ids == ("researchers-chat",)
    with pytest.raises(
        PermissionDenied, match=r"rita may not memory\.write on /system/a\.md: policy"
    ) as caught:
        gws.governance.check("rita", "memory.write", "/system/a.md")
    assert caught.value.decision.effect == "deny"  # type: ignore[attr-defined]


def test_check_records_only_refusals_when_asked_to(gws: Workspace) -> None:
    gov = gws.governance
    head = gws.ledger.head[0]
    allowed = gov.check("rita", "memory.read", "/notes/a.md", record="refusals")
    assert allowed.allowed
    assert gws.ledger.head[0] == head  # an allowed read costs no event
    with pytest.raises(PermissionDenied, match="chat-read-own-only"):
        gov.check("rita", "chat.read", "conversation:9", {"own": False}, record="refusals")
    refused = gws.ledger.events(topic="governance.decision")[-1]
    assert (refused.seq, refused.actor, refused.payload["effect"]) == (head + 1, "rita", "deny")
    # A review is not an allow: it is recorded and raises its approval request.
    with pytest.raises(PermissionDenied, match="approval"):
        gov.check("rita", "model.deploy", "model:m1", record="refusals")
    assert len(gov.approvals("pending")) == 1


def test_a_what_if_records_nothing_and_raises_no_approval(gws: Workspace) -> None:
    gov = gws.governance
    head = gws.ledger.head[0]
    review = gov.check("rita", "model.deploy", "model:m1", record="none", enforce=False)
    assert (review.effect, review.approval_id) == ("review", None)
    with pytest.raises(PermissionDenied, match=r"rita may not model\.deploy on model:m1"):
        gov.check("rita", "model.deploy", "model:m1", record="none")
    # A what-if may assume another role; a recorded decision always uses the actor's own.
    assert gov.check("rita", "auth.user.create", "user:x", record="none", enforce=False, role="admin").allowed
    assert gws.ledger.head[0] == head
    assert gov.approvals().empty
    with pytest.raises(PolicyError, match="only in a what-if"):
        gov.check("rita", "auth.user.create", "user:x", role="admin")
    with pytest.raises(PolicyError, match="cannot wait"):
        gov.check("rita", "model.deploy", "model:m1", record="none", wait=1)
    with pytest.raises(PolicyError, match="record is one of"):
        gov.check("rita", "chat.send", record="some")  # type: ignore[arg-type]


def test_a_denial_is_returned_instead_of_raised_without_enforce(gws: Workspace) -> None:
    decision = gws.governance.check("vic", "memory.write", "/notes/a.md", enforce=False)
    assert (decision.effect, decision.policy_ids) == ("deny", ())
    assert gws.ledger.events(topic="governance.decision")[-1].payload["effect"] == "deny"
    with pytest.raises(PermissionDenied, match=r"^vic may not write notes: no policy allows"):
        gws.governance.check("vic", "memory.write", "/notes/a.md", what="write notes")


def test_roles_follow_auth_changes_at_once(gws: Workspace) -> None:
    assert gws.governance.check("rita", "task.create", record="none", enforce=False).allowed
    gws.auth.set_role("rita", "viewer", by="ada")
    assert not gws.governance.check("rita", "task.create", record="none", enforce=False).allowed
    assert gws.governance.check("rita", "memory.read", "/x", record="none", enforce=False).allowed
    gws.auth.disable("rita", by="ada")
    decision = gws.governance.check("rita", "memory.read", "/x", record="none", enforce=False)
    assert "role: none" in decision.reasons[0]


# -- policy changes ------------------------------------------------------------------------------------------
def test_policy_changes_are_events_and_the_index_follows_them(gws: Workspace) -> None:
    gov = gws.governance
    assert not gov.check("vic", "task.create", enforce=False).allowed  # also fills the decision cache
    old_index = gov.index
    added = gov.add_policy(
        {"id": "viewers-chat", "effect": "allow", "roles": ["viewer"], "actions": ["task.create"]},
        actor="ada",
        reason="viewers may ask questions",
    )
    assert gov.index is not old_index
    assert gov.check("vic", "task.create", enforce=False).policy_ids == ("viewers-chat",)
    gov.update_policy(
        {**added.as_dict(), "conditions": [{"key": "channel", "op": "eq", "value": "web"}]}, actor="ada"
    )
    assert not gov.check("vic", "task.create", None, {"channel": "api"}, record="none", enforce=False).allowed
    assert gov.check("vic", "task.create", None, {"channel": "web"}, record="none", enforce=False).allowed
    row = gov.policies().set_index("id").loc["viewers-chat"]
    assert (row["version"], row["source"], row["updated_by"]) == (2, "user", "ada")
    gov.remove_policy("viewers-chat", actor="ada")
    assert not gov.check("vic", "task.create", None, {"channel": "web"}, record="none", enforce=False).allowed
    assert "viewers-chat" not in set(gov.policies()["id"])
    changes = [t for t in topics(gws, "governance.policy_*")]
    assert changes == ["governance.policy_added", "governance.policy_updated", "governance.policy_removed"]
    added_event = gws.ledger.events(topic="governance.policy_added")[0]
    assert added_event.payload["policy"]["id"] == "viewers-chat"
    assert added_event.payload["reason"] == "viewers may ask questions"


def test_policy_changes_are_governed_too(gws: Workspace) -> None:
    head = gws.ledger.head[0]
    with pytest.raises(PermissionDenied, match=r"governance\.policy\.add"):
        gws.governance.add_policy(
            {"id": "mine", "effect": "allow", "roles": ["researcher"], "actions": ["**"]}, actor="rita"
        )
    with pytest.raises(PermissionDenied):
        gws.governance.remove_policy("sandbox-no-network", actor="rita")
    assert topics(gws, "governance.policy_*") == []
    assert gws.ledger.head[0] == head + 2  # only the two refused decisions
    with pytest.raises(PolicyError, match="exists already"):
        gws.governance.add_policy(default_pack()[0], actor="ada")
    with pytest.raises(PolicyError, match="no policy with id"):
        gws.governance.remove_policy("nope", actor="ada")
    with pytest.raises(PolicyError, match="no policy with id 'nope'"):
        gws.governance.update_policy(
            {"id": "nope", "effect": "allow", "roles": ["admin"], "actions": ["a"]}, actor="ada"
        )


def test_decisions_are_cached_until_a_policy_changes() -> None:
    ix = index({"id": "p", "effect": "allow", "roles": ["viewer"], "actions": ["a.b"]})
    first = ix.evaluate("vic", "viewer", "a.b", None, {"k": 1})
    assert ix.evaluate("vic", "viewer", "a.b", None, {"k": 1}) is first
    assert ix.evaluate("vic", "viewer", "a.b", None, {"k": 1}, cache=False) == first
    assert ix.evaluate("vic", "viewer", "a.b", None, {"k": [1]}) == first  # unhashable: evaluated, not cached


def test_the_decision_cache_keeps_booleans_apart_from_numbers() -> None:
    ix = index(
        {
            "id": "p",
            "effect": "allow",
            "roles": ["viewer"],
            "actions": ["a.b"],
            "conditions": [{"key": "k", "op": "eq", "value": 1}],
        }
    )
    assert ix.evaluate("vic", "viewer", "a.b", None, {"k": 1}).allowed
    assert not ix.evaluate("vic", "viewer", "a.b", None, {"k": True}).allowed  # True == 1 as a dict key
    assert ix.evaluate("vic", "viewer", "a.b", None, {"k": 1.0}).allowed


# -- break-glass ---------------------------------------------------------------------------------------------
LOCKDOWN = {"id": "lockdown", "effect": "deny", "actors": ["*"], "actions": ["**"], "description": "panic"}


def _state(ws: Workspace) -> tuple[Any, list[str]]:
    return ws.ledger.head, sorted(p.id for p in ws.governance.index.policies)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda gov: gov.add_policy(LOCKDOWN, actor="system"), id="add deny-all"),
        pytest.param(
            lambda gov: gov.add_policy(
                {"id": "no-admin-policy", "effect": "deny", "roles": ["admin"], "actions": ["governance.**"]},
                actor="ada",
            ),
            id="add deny admins governance",
        ),
        pytest.param(
            lambda gov: gov.remove_policy("admins-everything", actor="ada"), id="remove admins' allow"
        ),
        pytest.param(
            lambda gov: gov.update_policy(
                {**gov.policy("admins-everything").as_dict(), "actions": ["chat.**", "memory.**"]},
                actor="ada",
            ),
            id="narrow admins' allow",
        ),
        pytest.param(
            lambda gov: gov.load_pack([Policy.from_dict(LOCKDOWN)], name="panic", actor="system"),
            id="load a deny-all pack",
        ),
    ],
)
def test_a_policy_change_that_locks_every_admin_out_is_refused_and_writes_nothing(
    gws: Workspace, change: Any
) -> None:
    before = _state(gws)
    with pytest.raises(PolicyError, match=r"no active admin .*could change policy"):
        change(gws.governance)
    assert _state(gws) == before  # no policy event, not even a decision
    assert gws.governance.check("ada", "governance.policy.add", "policy:x", record="none").allowed


def test_locking_out_one_admin_is_fine_while_another_can_still_change_policy(gws: Workspace) -> None:
    gws.governance.add_policy(
        {"id": "ada-hands-off", "effect": "deny", "actors": ["ada"], "actions": ["governance.**"]},
        actor="bob",
    )
    assert not gws.governance.check(
        "ada", "governance.policy.remove", "policy:x", record="none", enforce=False
    ).allowed
    gws.auth.disable("bob", by="system")  # bob, the other admin, is gone: now ada must keep the keys
    with pytest.raises(PolicyError, match=r"no active admin \(ada\)"):
        gws.governance.add_policy({**LOCKDOWN, "id": "more"}, actor="system")


def test_without_admins_yet_the_first_admin_is_protected_too() -> None:
    with open_workspace(":memory:", clock=ManualClock(), seed=7) as ws:
        with pytest.raises(PolicyError, match="no active admin"):
            ws.governance.add_policy(LOCKDOWN, actor="system")
        assert "lockdown" not in {p.id for p in ws.governance.index.policies}


def test_the_local_operator_may_always_change_policy(gws: Workspace) -> None:
    gov = gws.governance
    # Policies may deny the operator anything else, and even policy changes: the deny is recorded as moot.
    gov.add_policy(
        {"id": "no-operator", "effect": "deny", "actors": ["system"], "actions": ["**"]}, actor="ada"
    )
    with pytest.raises(PermissionDenied):
        gov.check("system", "memory.write", "/notes/a.md")
    decision = gov.check("system", "governance.policy.remove", "policy:no-operator", record="none")
    assert decision.allowed
    assert decision.reasons[0].startswith("break-glass: the local operator (system)")
    assert "no-operator" in decision.reasons[1]
    gov.remove_policy("no-operator", actor="system")
    assert "no-operator" not in {p.id for p in gov.index.policies}
    logged = gws.ledger.events(topic="governance.decision")[-1]
    assert (logged.actor, logged.payload["action"], logged.payload["effect"]) == (
        "system",
        "governance.policy.remove",
        "allow",
    )
    assert logged.payload["reasons"][0].startswith("break-glass")
    # Only the local operator: another service actor gets no break-glass.
    gov.add_policy({"id": "no-meta", "effect": "deny", "actors": ["meta"], "actions": ["**"]}, actor="ada")
    with pytest.raises(PermissionDenied, match="no-meta"):
        gov.remove_policy("no-meta", actor="meta")


def _lock_out(ws: Workspace) -> None:
    """A workspace locked as one was before the guard existed: the deny-all recorded directly on the ledger."""
    ws.publish(
        "governance.policy_added", {"policy": Policy.from_dict(LOCKDOWN).as_dict(), "reason": ""}, actor="ada"
    )


def test_reset_restores_the_default_pack_for_a_locked_out_workspace(gws: Workspace) -> None:
    gov = gws.governance
    gov.add_policy(
        {"id": "custom", "effect": "allow", "roles": ["viewer"], "actions": ["task.create"]}, actor="ada"
    )
    _lock_out(gws)
    with pytest.raises(PermissionDenied, match="lockdown"):
        gov.remove_policy("lockdown", actor="ada")
    with pytest.raises(PermissionDenied, match="lockdown"):
        gov.reset_policies(actor="ada")
    with pytest.raises(PermissionDenied, match="lockdown"):
        gov.reset_policies(actor="rita")
    event = gov.reset_policies(reason="locked out")
    assert (event.topic, event.actor, event.payload["reason"]) == (
        "governance.policies_reset",
        "system",
        "locked out",
    )
    assert sorted(p.id for p in gov.index.policies) == sorted(p.id for p in default_pack())
    assert set(gov.policies()["source"]) == {"pack:default"}
    assert gov.check("ada", "governance.policy.add", "policy:x", record="none").allowed
    decision = gws.ledger.events(topic="governance.decision")[-1]
    assert (decision.actor, decision.payload["action"], decision.payload["effect"]) == (
        "system",
        "governance.policy.reset",
        "allow",
    )
    copy = replay(gws, ":memory:")
    try:
        assert projection_differences(gws, copy) == {}
    finally:
        copy.close()


# -- approvals -----------------------------------------------------------------------------------------------
def test_review_raises_an_approval_that_an_admin_grants(gws: Workspace) -> None:
    gov = gws.governance
    request = ("rita", "loop.set_param", "loop:reflection", {"key": "interval", "value": 5})
    with pytest.raises(PermissionDenied, match=r"approval \S+ is still pending") as caught:
        gov.check(*request, wait=30)
    decision = caught.value.decision
    approval_id = decision.approval_id  # type: ignore[attr-defined]
    assert approval_id in str(caught.value)
    assert decision.effect == "review"  # type: ignore[attr-defined]
    pending = gov.approvals("pending")
    assert list(pending["id"]) == [approval_id]
    assert pending.iloc[0]["requester"] == "rita"
    # Asking again points at the same request instead of queueing a duplicate.
    assert gov.check(*request, enforce=False).approval_id == approval_id
    assert len(gov.approvals()) == 1
    approved = gov.approve(approval_id, by="ada", note="5 s is fine for this experiment")
    assert (approved.state, approved.decided_by) == ("approved", "ada")
    granted = gov.check(*request, approval_id=approval_id)
    assert granted.effect == "allow"
    assert granted.approval_id == approval_id
    assert "granted by ada (5 s is fine for this experiment)" in granted.reasons[-1]
    decisions = [
        e.payload["effect"] for e in gws.ledger.events(topic="governance.decision") if e.actor == "rita"
    ]
    assert decisions == ["review", "review", "allow"]
    assert topics(gws, "governance.approval_*") == [
        "governance.approval_requested",
        "governance.approval_decided",
    ]
    requested = gws.ledger.events(topic="governance.approval_requested")[0]
    review = gws.ledger.events(topic="governance.decision")[-3]
    assert requested.parent_id == review.id  # the request was caused by the review decision


def test_a_rejected_approval_makes_the_action_fail(gws: Workspace) -> None:
    gov = gws.governance
    with pytest.raises(PermissionDenied) as caught:
        gov.check("rita", "model.deploy", "model:m1")
    approval_id = caught.value.decision.approval_id  # type: ignore[attr-defined]
    gov.reject(approval_id, by="bob", note="not before the evaluation")
    with pytest.raises(PermissionDenied, match="rejected by bob \\(not before the evaluation\\)") as again:
        gov.check("rita", "model.deploy", "model:m1", approval_id=approval_id)
    assert again.value.decision.effect == "deny"  # type: ignore[attr-defined]
    with pytest.raises(PolicyError, match="rejected already"):
        gov.approve(approval_id, by="ada")


def test_only_admins_or_the_system_decide_and_never_their_own_request(gws: Workspace) -> None:
    gov = gws.governance
    gov.add_policy(
        {"id": "admins-deploy-review", "effect": "review", "roles": ["admin"], "actions": ["model.deploy"]},
        actor="system",
    )
    rita_asks = gov.check("rita", "model.deploy", "model:m1", enforce=False).approval_id
    ada_asks = gov.check("ada", "model.deploy", "model:m2", enforce=False).approval_id
    assert rita_asks
    assert ada_asks
    for outsider, why in (
        ("rita", "approvals-decided-by-admins"),
        ("vic", "approvals-decided-by-admins"),
        ("mallory", "default deny"),
    ):
        with pytest.raises(PermissionDenied, match=f"{outsider} may not decide approvals: .*{why}"):
            gov.approve(ada_asks, by=outsider)
    refusals = gws.events(topic="governance.decision")
    refusals = refusals[refusals["resource"] == f"approval:{ada_asks}"]
    assert list(refusals["actor"]) == ["rita", "vic", "mallory"]  # decided by policy, refusals recorded
    with pytest.raises(PermissionDenied, match="someone else must decide"):
        gov.approve(ada_asks, by="ada")
    assert gov.approve(ada_asks, by="bob").state == "approved"
    assert gov.reject(rita_asks, by="system").state == "rejected"
    with pytest.raises(PolicyError, match="no approval"):
        gov.approve("nope", by="ada")


def test_an_approval_covers_only_its_own_request(gws: Workspace) -> None:
    gov = gws.governance
    approval_id = gov.check(
        "rita", "loop.set_param", "loop:reflection", {"value": 5}, enforce=False
    ).approval_id
    assert approval_id is not None
    gov.approve(approval_id, by="ada")
    for other in [
        ("rita", "loop.set_param", "loop:reflection", {"value": 1}),
        ("rita", "loop.set_param", "loop:learning", {"value": 5}),
        ("raj", "loop.set_param", "loop:reflection", {"value": 5}),
    ]:
        with pytest.raises(PermissionDenied, match="not for this request"):
            gov.check(*other, approval_id=approval_id)
    assert gov.check(
        "rita", "loop.set_param", "loop:reflection", {"value": 5}, approval_id=approval_id
    ).allowed


def test_a_deterministic_workspace_checks_once_instead_of_waiting(gws: Workspace) -> None:
    started = time.monotonic()
    with pytest.raises(PermissionDenied, match="still pending"):
        gws.governance.check("rita", "model.deploy", "model:m1", wait=60)
    assert time.monotonic() - started < 5


def _approve_when_asked(ws: Workspace, state: str, by: str, delay: float = 0.2) -> threading.Thread:
    def admin() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pending = ws.governance.approvals("pending")
            if len(pending):
                time.sleep(delay)  # the requester is waiting by now
                answer = ws.governance.approve if state == "approved" else ws.governance.reject
                answer(pending.iloc[0]["id"], by=by)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=admin, name="test-admin")
    thread.start()
    return thread


def test_a_waiting_check_proceeds_when_an_admin_approves_meanwhile(live_ws: Workspace) -> None:
    admin = _approve_when_asked(live_ws, "approved", "ada")
    started = time.monotonic()
    decision = live_ws.governance.check("rita", "model.deploy", "model:m1", {"target": "staging"}, wait=20)
    waited = time.monotonic() - started
    admin.join()
    assert decision.effect == "allow"
    assert "granted by ada" in decision.reasons[-1]
    assert 0.15 < waited < 10  # it did wait, and woke up on the approval rather than at the deadline


def test_a_waiting_check_fails_when_an_admin_rejects_meanwhile(live_ws: Workspace) -> None:
    admin = _approve_when_asked(live_ws, "rejected", "bob")
    with pytest.raises(PermissionDenied, match="rejected by bob"):
        live_ws.governance.check("rita", "model.deploy", "model:m1", wait=20)
    admin.join()


def test_a_waiting_check_times_out_and_can_retry_later(live_ws: Workspace) -> None:
    gov = live_ws.governance
    started = time.monotonic()
    with pytest.raises(PermissionDenied, match=r"still pending after waiting 0\.3 s") as caught:
        gov.check("rita", "loop.set_param", "loop:reflection", wait=0.3)
    assert 0.3 <= time.monotonic() - started < 5
    approval_id = caught.value.decision.approval_id  # type: ignore[attr-defined]
    assert re.search(rf"approval_id='{approval_id}'", str(caught.value))
    assert gov.wait(approval_id, 0.1).state == "pending"
    threading.Timer(0.2, gov.approve, args=(approval_id,), kwargs={"by": "ada"}).start()
    assert gov.wait(approval_id, 20).state == "approved"
    assert gov.check("rita", "loop.set_param", "loop:reflection", approval_id=approval_id).allowed


# -- replay --------------------------------------------------------------------------------------------------
def test_replay_rebuilds_policies_and_approvals(gws: Workspace) -> None:
    gov = gws.governance
    gov.add_policy(
        {"id": "viewers-chat", "effect": "allow", "roles": ["viewer"], "actions": ["chat.*"]}, actor="ada"
    )
    gov.remove_policy("researchers-tasks", actor="ada")
    first = gov.check("rita", "model.deploy", "model:m1", enforce=False).approval_id
    gov.check("rita", "loop.set_param", "loop:x", enforce=False)
    assert first is not None
    gov.approve(first, by="ada")
    copy = replay(gws, ":memory:")
    try:
        assert projection_differences(gws, copy) == {}
        assert len(copy.governance.policies()) == len(gov.policies())
        for request in [("vic", "chat.send"), ("rita", "task.create"), ("rita", "memory.write", "/system/x")]:
            assert copy.governance.check(*request, record="none", enforce=False) == gov.check(
                *request, record="none", enforce=False
            )
    finally:
        copy.close()


# -- properties ----------------------------------------------------------------------------------------------
_ACTION_GLOBS = [
    "chat.send",
    "memory.*",
    "memory.**",
    "**",
    "**.read",
    "*.read",
    "memory.write:/system/**",
    "memory.read:/p/*",
    "sandbox.execute",
    "memory.i?em.*",
]
_RESOURCE_GLOBS = ["/system/**", "/p/*", "/p/**", "/p/a", "**", "**/a"]
_CONDITIONS = [
    {"key": "n", "op": "eq", "value": 1},
    {"key": "n", "op": "gt", "value": 2},
    {"key": "n", "op": "not_in", "value": [1, 3]},
    {"key": "flag", "op": "eq", "value": True},
    {"key": "flag", "op": "ne", "value": True},
    {"key": "name", "op": "in", "value": ["a", "b"]},
    {"key": "name", "op": "matches", "value": "a.*"},
    {"key": "tag", "op": "exists", "value": True},
    {"key": "tag", "op": "exists", "value": False},
    {"key": "deep.n", "op": "le", "value": 1},
]


@st.composite
def _policies(draw: st.DrawFn, prefix: str = "p") -> list[Policy]:
    n = draw(st.integers(0, 6))
    out = []
    for i in range(n):
        roles = draw(st.lists(st.sampled_from([*ROLES, "*"]), max_size=2, unique=True))
        actors = draw(st.lists(st.sampled_from(["alice", "bob", "*"]), max_size=2, unique=True))
        if not roles and not actors:
            roles = [draw(st.sampled_from(ROLES))]
        out.append(
            Policy.from_dict(
                {
                    "id": f"{prefix}{i}",
                    "effect": draw(st.sampled_from(EFFECTS)),
                    "actions": draw(
                        st.lists(st.sampled_from(_ACTION_GLOBS), min_size=1, max_size=3, unique=True)
                    ),
                    "resources": draw(st.lists(st.sampled_from(_RESOURCE_GLOBS), max_size=2, unique=True)),
                    "roles": roles,
                    "actors": actors,
                    "conditions": draw(st.lists(st.sampled_from(_CONDITIONS), max_size=2)),
                    "priority": draw(st.integers(-3, 3)),
                }
            )
        )
    return out


_VALUES = st.one_of(st.none(), st.booleans(), st.integers(0, 4), st.sampled_from(["a", "ab", "b", "1"]))
_CONTEXTS = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["n", "flag", "name", "tag"]), _VALUES, max_size=4),
    st.fixed_dictionaries({"deep": st.dictionaries(st.just("n"), _VALUES)}),
)
_REQUESTS = st.tuples(
    st.sampled_from(["alice", "bob", "carol"]),
    st.sampled_from([*ROLES, None]),
    st.sampled_from(
        ["chat.send", "memory.read", "memory.write", "memory.item.read", "sandbox.execute", "read"]
    ),
    st.sampled_from([None, "/system", "/system/x/y", "/p/a", "/p/b/c", "/q", "/x/a"]),
    _CONTEXTS,
)
_RANK = {e: i for i, e in enumerate(EFFECTS)}


def _ref_same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b and (type(a) is type(b) or {type(a), type(b)} <= {int, float})


def _ref_condition(c: Condition, context: Any) -> bool:
    value: Any = context if context is not None else {}
    for part in c.key.split("."):
        if not isinstance(value, dict) or part not in value:
            return c.op == "exists" and c.value is False
        value = value[part]
    if c.op == "exists":
        return (value is not None) == c.value
    number = isinstance(value, int | float) and not isinstance(value, bool)
    ordered = (number and not isinstance(c.value, str)) or (
        isinstance(value, str) and isinstance(c.value, str)
    )
    return {
        "eq": lambda: _ref_same(value, c.value),
        "ne": lambda: not _ref_same(value, c.value),
        "in": lambda: any(_ref_same(value, x) for x in c.value),
        "not_in": lambda: not any(_ref_same(value, x) for x in c.value),
        "lt": lambda: ordered and value < c.value,
        "le": lambda: ordered and value <= c.value,
        "gt": lambda: ordered and value > c.value,
        "ge": lambda: ordered and value >= c.value,
        "matches": lambda: isinstance(value, str) and re.fullmatch(c.value, value) is not None,
    }[c.op]()


def _reference(
    policies: list[Policy], actor: str, role: str | None, action: str, resource: Any, context: Any
):
    """The specification, naively: every policy, every time."""
    matched = []
    for p in policies:
        if not (
            "*" in p.actors or actor in p.actors or (role is not None and ("*" in p.roles or role in p.roles))
        ):
            continue
        about = False
        for entry in p.actions:
            glob, sep, rglob = entry.partition(":")
            if _ref_glob(glob, action, ".") and (
                not sep or (resource is not None and _ref_glob(rglob, resource, "/"))
            ):
                about = True
        if not about:
            continue
        if p.resources and (resource is None or not any(_ref_glob(g, resource, "/") for g in p.resources)):
            continue
        if all(_ref_condition(c, context) for c in p.conditions):
            matched.append(p)
    if not matched:
        return "deny", []
    effect = max((p.effect for p in matched), key=_RANK.__getitem__)
    winners = sorted((p for p in matched if p.effect == effect), key=lambda p: (-p.priority, p.id))
    return effect, [p.id for p in winners]


_PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_PROPERTY
@given(policies=_policies(), requests=st.lists(_REQUESTS, min_size=1, max_size=8))
def test_evaluation_agrees_with_the_naive_reference(policies: list[Policy], requests: list[tuple]) -> None:
    ix = PolicyIndex(policies)
    for actor, role, action, resource, context in requests:
        for cache in (True, False, True):
            decision = ix.evaluate(actor, role, action, resource, context, cache=cache)
            assert (decision.effect, list(decision.policy_ids)) == _reference(
                policies, actor, role, action, resource, context
            )


@_PROPERTY
@given(policies=_policies(), extra=_policies(prefix="x"), req=_REQUESTS)
def test_adding_policies_is_monotone(policies: list[Policy], extra: list[Policy], req: tuple) -> None:
    before = PolicyIndex(policies).evaluate(*req)
    allows = [p for p in extra if p.effect == "allow"]
    denies = [p for p in extra if p.effect == "deny"]
    with_allows = PolicyIndex(policies + allows).evaluate(*req)
    with_denies = PolicyIndex(policies + denies).evaluate(*req)
    # An allow never overturns an explicit deny or a review ...
    if before.effect != "allow" and before.policy_ids:
        assert with_allows.effect == before.effect
    # ... and a deny never makes anything allowed (nor less strict).
    assert _RANK[with_denies.effect] >= _RANK[before.effect]
    if with_denies.effect == "allow":
        assert before.effect == "allow"


# -- the benchmark's peers decide the same -------------------------------------------------------------------
def test_casbin_and_cedar_decide_the_benchmark_mix_as_we_do() -> None:
    pytest.importorskip("casbin")
    cedarpy = pytest.importorskip("cedarpy")
    from grace_core import bench

    pack = default_pack()
    roles = bench.GOVERNANCE_ROLES
    mix = bench.governance_mix(1500, seed=1) + bench.governance_mix(500, seed=2, distinct=50)
    ix = PolicyIndex(pack)
    ours = [ix.evaluate(a, roles.get(a), act, res, ctx).effect for a, act, res, ctx in mix]
    assert {"allow", "deny", "review"} == set(ours)  # the mix exercises every effect
    enforcer = bench.casbin_enforcer(pack, roles)
    assert [bench.casbin_effect(enforcer, *r) for r in mix] == ours
    results = cedarpy.is_authorized_batch(
        [bench.cedar_request(*r) for r in mix],
        cedarpy.PolicySet.from_str(bench.cedar_policies(pack)),
        cedarpy.Entities.from_json_str(json.dumps(bench.cedar_entities(roles))),
    )
    assert [r.diagnostics.errors for r in results if r.diagnostics.errors] == []
    assert [bench.cedar_effect(r) for r in results] == ours


# -- command line --------------------------------------------------------------------------------------------
def grace(*args: str, path: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return support.grace(*args, "--workspace", path, stdin=stdin)


@pytest.fixture
def ws_file(tmp_path: Path) -> Path:
    path = tmp_path / "gov.duckdb"
    with open_workspace(path) as ws:
        _governed(ws)
        ws.governance.check("rita", "model.deploy", "model:m1", {"target": "staging"}, enforce=False)
    return path


@pytest.mark.slow  # several CLI processes, about a second each
def test_cli_lists_shows_and_checks_policies(ws_file: Path) -> None:
    listed = grace("policy", "list", path=ws_file)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "effect", "priority"]
    effects = [line.split()[1] for line in lines[1:]]
    assert effects == sorted(effects, key=["deny", "review", "allow"].index)  # denies first, allows last
    assert {line.split()[0] for line in lines[1:]} == {p.id for p in default_pack()}
    shown = grace("policy", "show", "researchers-loop-params-review", path=ws_file)
    assert "effect: review" in shown.stdout
    assert "# policy 'researchers-loop-params-review' requires an admin's approval" in shown.stdout
    denied = grace("policy", "check", "rita", "memory.write", "/system/prompt.md", path=ws_file)
    assert denied.returncode == 1
    assert denied.stdout.splitlines()[0] == "DENY"
    assert "system-memory-admins-only" in denied.stdout
    allowed = grace("policy", "check", "ada", "memory.write:/system/prompt.md", path=ws_file)
    assert (allowed.returncode, allowed.stdout.splitlines()[0]) == (0, "ALLOW")
    review = grace(
        "policy",
        "check",
        "rita",
        "sandbox.execute",
        "-c",
        "network=false",
        "-c",
        "timeout_s=900",
        "--json",
        path=ws_file,
    )
    assert review.returncode == 1
    assert json.loads(review.stdout)["effect"] == "review"
    what_if = grace("policy", "check", "newcomer", "chat.send", "--as-role", "researcher", path=ws_file)
    assert what_if.returncode == 0, what_if.stdout
    with open_workspace(ws_file) as ws:  # checks are what-ifs: nothing was logged
        assert [e.actor for e in ws.ledger.events(topic="governance.decision")][-1] == "rita"
    bad = grace("policy", "check", "rita", "Memory.Write", path=ws_file)
    assert bad.returncode == 2
    assert bad.stderr.startswith("grace: error: bad action 'Memory.Write'")


@pytest.mark.slow  # several CLI processes, about a second each
def test_cli_adds_replaces_and_removes_policies(ws_file: Path, tmp_path: Path) -> None:
    policy_file = tmp_path / "viewers.yaml"
    policy_file.write_text(
        "policies:\n"
        "  - id: viewers-chat\n    effect: allow\n    roles: [viewer]\n    actions: [task.create]\n"
        "    description: Viewers may file tasks.\n"
    )
    assert grace("policy", "check", "vic", "task.create", path=ws_file).returncode == 1
    added = grace("policy", "add", str(policy_file), path=ws_file)
    assert (added.returncode, added.stdout.strip()) == (0, "added  viewers-chat  (allow)")
    assert grace("policy", "check", "vic", "task.create", path=ws_file).returncode == 0
    again = grace("policy", "add", str(policy_file), path=ws_file)
    assert again.returncode == 2
    assert "exists already" in again.stderr
    policy_file.write_text(policy_file.read_text().replace("effect: allow", "effect: deny"))
    replaced = grace("policy", "add", "--replace", str(policy_file), path=ws_file)
    assert replaced.stdout.strip() == "updated  viewers-chat  (deny)"
    refused = grace("policy", "remove", "viewers-chat", "--by", "vic", path=ws_file)
    assert refused.returncode == 2
    assert "vic may not governance.policy.remove" in refused.stderr
    assert grace("policy", "remove", "viewers-chat", path=ws_file).returncode == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text("- {id: x, effect: permit, roles: [viewer], actions: [a]}\n")
    failed = grace("policy", "add", str(broken), path=ws_file)
    assert failed.returncode == 2
    assert "unknown effect 'permit'" in failed.stderr
    with open_workspace(ws_file) as ws:
        assert topics(ws, "governance.policy_*") == [
            "governance.policy_added",
            "governance.policy_updated",
            "governance.policy_removed",
        ]


@pytest.mark.slow  # several CLI processes, about a second each
def test_cli_refuses_a_lockout_and_the_operator_resets_a_locked_workspace(
    ws_file: Path, tmp_path: Path
) -> None:
    lockdown = tmp_path / "lockdown.yaml"
    lockdown.write_text("- {id: lockdown, effect: deny, actors: ['*'], actions: ['**']}\n")
    refused = grace("policy", "add", str(lockdown), path=ws_file)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "no active admin (ada, bob) could change policy" in refused.stderr
    assert "lockdown" not in grace("policy", "list", path=ws_file).stdout
    with open_workspace(ws_file) as ws:
        _lock_out(ws)  # as an older workspace could be
    locked = grace("policy", "remove", "lockdown", "--by", "ada", path=ws_file)
    assert locked.returncode == 2
    assert "ada may not governance.policy.remove on policy:lockdown: policy 'lockdown'" in locked.stderr
    check = grace("policy", "check", "system", "governance.policy.reset", "policy-pack:default", path=ws_file)
    assert (check.returncode, check.stdout.splitlines()[0]) == (0, "ALLOW")
    assert "break-glass" in check.stdout
    reset = grace("policy", "reset", "--reason", "locked out", path=ws_file)
    assert reset.returncode == 0, reset.stderr
    assert "removed  lockdown" in reset.stdout
    with open_workspace(ws_file) as ws:
        assert sorted(p.id for p in ws.governance.index.policies) == sorted(p.id for p in default_pack())
        assert topics(ws, "governance.policies_reset") == ["governance.policies_reset"]
        assert ws.governance.check("ada", "governance.policy.remove", "policy:x", record="none").allowed


@pytest.mark.slow  # several CLI processes, about a second each
def test_cli_lists_and_decides_approvals(ws_file: Path) -> None:
    pending = grace("approvals", "list", "--state", "pending", "--json", path=ws_file)
    rows = [json.loads(line) for line in pending.stdout.splitlines()]
    assert [(r["requester"], r["action"], r["state"]) for r in rows] == [("rita", "model.deploy", "pending")]
    approval_id = rows[0]["id"]
    table = grace("approvals", "list", path=ws_file)
    assert approval_id in table.stdout
    assert "researchers-model-deploy-review" in table.stdout
    refused = grace("approvals", "approve", approval_id, "--by", "rita", path=ws_file)
    assert refused.returncode == 2
    assert "rita may not decide approvals" in refused.stderr
    approved = grace("approvals", "approve", approval_id, "--by", "ada", "--note", "ok", path=ws_file)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.startswith(f"approved  {approval_id}  (rita: model.deploy on model:m1)")
    late = grace("approvals", "reject", approval_id, "--by", "bob", path=ws_file)
    assert late.returncode == 2
    assert "approved already" in late.stderr
    assert (
        grace("approvals", "list", "--state", "pending", path=ws_file).stdout.strip()
        == "no pending approvals"
    )
    with open_workspace(ws_file) as ws:
        decision = ws.governance.check(
            "rita", "model.deploy", "model:m1", {"target": "staging"}, approval_id=approval_id
        )
        assert decision.allowed
