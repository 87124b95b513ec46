"""Causal tracking: parents come from the event being handled, never by hand; lineage, impact and graphs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import networkx as nx
import pytest

from grace_core import (
    Event,
    LedgerError,
    ManualClock,
    Message,
    Workspace,
    current_event,
    handling,
    open_workspace,
)

MODES = ["deterministic", "live"]


def _open(mode: str) -> Workspace:
    if mode == "deterministic":
        return open_workspace(":memory:", clock=ManualClock(), seed=5)
    return open_workspace(":memory:")  # SystemClock: handlers run on the dispatcher thread


@pytest.fixture(params=MODES)
def any_ws(request: pytest.FixtureRequest) -> Iterator[Workspace]:
    ws = _open(request.param)
    yield ws
    ws.close()


@pytest.fixture
def det_ws() -> Iterator[Workspace]:
    ws = _open("deterministic")
    yield ws
    ws.close()


def _settle(ws: Workspace) -> None:
    assert ws.mesh.drain(timeout=10)


def _chain(ws: Workspace) -> list[Event]:
    """chain.a -> (handler) chain.b -> (handler) chain.c -> (handler) chain.d; returns the four events."""
    for src, dst in [("a", "b"), ("b", "c"), ("c", "d")]:

        def step(event: Event, dst: str = dst) -> None:
            ws.publish(f"chain.{dst}", {"from": event.topic}, actor=f"handler_{dst}")

        ws.subscribe(f"chain.{src}", step, name=f"step_{src}")
    root = ws.publish("chain.a", {"start": True}, actor="user")
    _settle(ws)
    by_topic = {e.topic: e for e in ws.ledger.events(topic="chain.*")}
    assert sorted(by_topic) == ["chain.a", "chain.b", "chain.c", "chain.d"]
    assert by_topic["chain.a"] == root
    return [by_topic[f"chain.{x}"] for x in "abcd"]


def test_a_root_event_starts_its_own_correlation(det_ws: Workspace) -> None:
    root = det_ws.publish("chat.message.received", {"text": "hi"}, actor="user")
    assert root.parent_id is None
    assert root.correlation_id == root.id


def test_event_published_in_a_handler_is_caused_by_the_handled_event(any_ws: Workspace) -> None:
    ws = any_ws
    seen_current: list[Event | None] = []

    def respond(event: Event) -> None:
        seen_current.append(current_event())
        ws.publish("chat.message.responded", {"to": event.id}, actor="responder")

    ws.subscribe("chat.message.received", respond, name="responder")
    received = ws.publish("chat.message.received", {"text": "hi"}, actor="user")
    _settle(ws)
    [responded] = ws.ledger.events(topic="chat.message.responded")
    assert responded.parent_id == received.id
    assert responded.correlation_id == received.correlation_id == received.id
    assert seen_current == [received]
    assert current_event() is None  # nothing leaks out of the handler into the publisher's context


def test_three_handlers_make_a_lineage_of_depth_three(any_ws: Workspace) -> None:
    ws = any_ws
    a, b, c, d = _chain(ws)
    assert [b.parent_id, c.parent_id, d.parent_id] == [a.id, b.id, c.id]
    assert {e.correlation_id for e in (a, b, c, d)} == {a.id}

    lineage = ws.causal.lineage(d.id)
    assert lineage["depth"].tolist() == [0, 1, 2, 3]
    assert lineage["id"].tolist() == [d.id, c.id, b.id, a.id]
    assert lineage["topic"].tolist() == ["chain.d", "chain.c", "chain.b", "chain.a"]

    impact = ws.causal.impact(a.id)
    assert impact["id"].tolist() == [a.id, b.id, c.id, d.id]
    assert impact["depth"].tolist() == [0, 1, 2, 3]
    assert ws.causal.impact(c.id)["id"].tolist() == [c.id, d.id]
    assert ws.causal.impact(d.id)["id"].tolist() == [d.id]

    corr = ws.causal.correlation(a.id)
    assert corr["id"].tolist() == [a.id, b.id, c.id, d.id]


def test_impact_of_a_fan_out_lists_every_branch(det_ws: Workspace) -> None:
    ws = det_ws
    ws.subscribe("alert.raised", lambda e: ws.publish("job.created", actor="tasks"), name="tasks")
    ws.subscribe("alert.raised", lambda e: ws.publish("notes.item.created", actor="memory"), name="memory")
    ws.subscribe("job.created", lambda e: ws.publish("job.assigned", actor="tasks"), name="assign")
    alert = ws.publish("alert.raised", {"rule": "r1"}, actor="hunter")
    impact = ws.causal.impact(alert.id)
    assert sorted(impact["topic"]) == ["alert.raised", "job.assigned", "job.created", "notes.item.created"]
    depth = dict(zip(impact["topic"], impact["depth"], strict=True))
    assert depth == {"alert.raised": 0, "job.created": 1, "notes.item.created": 1, "job.assigned": 2}
    unrelated = ws.publish("alert.raised", {"rule": "r2"}, actor="hunter")
    assert alert.id not in set(ws.causal.impact(unrelated.id)["id"])


def test_handling_sets_the_parent_for_manual_publishes(det_ws: Workspace) -> None:
    ws = det_ws
    cause = ws.publish("review.requested", actor="user")
    other = ws.publish("review.requested", actor="user")
    with handling(cause) as current:
        assert current is cause
        assert current_event() is cause
        first = ws.publish("review.started", actor="reviewer")
        with handling(other):
            nested = ws.publish("review.started", actor="reviewer")
        after_nested = ws.publish("review.done", actor="reviewer")
    outside = ws.publish("review.unrelated", actor="reviewer")
    assert first.parent_id == cause.id
    assert first.correlation_id == cause.correlation_id
    assert nested.parent_id == other.id
    assert after_nested.parent_id == cause.id  # the inner block restored the outer cause
    assert outside.parent_id is None
    assert current_event() is None


def test_handling_restores_the_context_when_the_block_raises(det_ws: Workspace) -> None:
    cause = det_ws.publish("x.cause", actor="user")
    with pytest.raises(RuntimeError), handling(cause):
        raise RuntimeError("boom")
    assert current_event() is None


def test_a_message_made_inside_handling_keeps_its_cause(det_ws: Workspace) -> None:
    ws = det_ws
    cause = ws.publish("batch.requested", actor="user")
    with handling(cause):
        caused = Message("batch.item", {"i": 1})
    uncaused = Message("batch.item", {"i": 2})
    assert caused.cause == cause
    assert uncaused.cause is None
    # published later, outside the block: the cause was captured when the message was made
    first, second = ws.publish_many([caused, uncaused], actor="batcher")
    assert first.parent_id == cause.id
    assert first.correlation_id == cause.correlation_id
    assert second.parent_id is None
    assert second.correlation_id == second.id


def test_live_dispatcher_keeps_handler_context_out_of_other_threads() -> None:
    ws = _open("live")
    try:
        inside = threading.Event()
        release = threading.Event()

        def slow(event: Event) -> None:
            inside.set()
            release.wait(5)
            ws.publish("slow.done", actor="slow")

        ws.subscribe("slow.start", slow, name="slow")
        start = ws.publish("slow.start", actor="user")
        assert inside.wait(5)
        # The dispatcher is mid-handler right now; a publish from this thread has no cause.
        independent = ws.publish("main.thread", actor="user")
        release.set()
        _settle(ws)
        assert independent.parent_id is None
        [done] = ws.ledger.events(topic="slow.done")
        assert done.parent_id == start.id
    finally:
        ws.close()


def test_graph_has_cause_to_effect_edges_and_node_attributes(any_ws: Workspace) -> None:
    ws = any_ws
    a, b, c, d = _chain(ws)
    g = ws.causal.graph(b.id)
    assert isinstance(g, nx.DiGraph)
    assert set(g.nodes) == {a.id, b.id, c.id, d.id}
    assert set(g.edges) == {(a.id, b.id), (b.id, c.id), (c.id, d.id)}
    assert g.nodes[c.id]["topic"] == "chain.c"
    assert g.nodes[c.id]["seq"] == c.seq
    assert g.nodes[c.id]["actor"] == "handler_c"
    assert g.nodes[c.id]["label"] == f"{c.seq} chain.c"
    assert nx.is_directed_acyclic_graph(g)
    assert list(nx.topological_sort(g)) == [a.id, b.id, c.id, d.id]

    lineage = ws.causal.graph(c.id, direction="lineage")
    assert set(lineage.nodes) == {a.id, b.id, c.id}
    assert set(lineage.edges) == {(a.id, b.id), (b.id, c.id)}
    impact = ws.causal.graph(b.id, direction="impact")
    assert set(impact.nodes) == {b.id, c.id, d.id}
    assert set(impact.edges) == {(b.id, c.id), (c.id, d.id)}
    with pytest.raises(LedgerError, match="direction"):
        ws.causal.graph(b.id, direction="sideways")


def test_unknown_ids_raise_ledger_error(det_ws: Workspace) -> None:
    causal = det_ws.causal
    for call in (causal.lineage, causal.impact, causal.graph, causal.correlation):
        with pytest.raises(LedgerError, match="no-such-id"):
            call("no-such-id")
