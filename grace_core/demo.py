"""A small, deterministic demo for a fresh workspace, so a new user has something to look at.

``seed_demo(ws)`` adds a short chat with causal children (replies and memory writes published from handlers,
so lineage and impact queries have depth), a few metric samples and a signed checkpoint, then records a
``workspace.demo_seeded`` event. Running it again on the same workspace adds nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import ReadOnlyError
from .events import Event

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = ["DEMO_MARKER", "demo_seeded", "seed_demo"]

DEMO_MARKER = "workspace.demo_seeded"
_CONVERSATION = "conversation:demo"
_MESSAGES = (
    ("user:ada", "Hello Grace, what can you do?", None),
    ("user:ada", "Please remember that the weekly review is on Fridays.", "weekly_review"),
    ("user:ada", "When is the weekly review?", None),
)
_REPLIES = {
    0: "I keep every message, memory and decision on one verifiable ledger. Ask me anything.",
    1: "Noted: the weekly review is on Fridays.",
    2: "The weekly review is on Fridays.",
}
_RESPONSE_SECONDS = (0.12, 0.34, 0.21)


def demo_seeded(ws: Workspace) -> bool:
    """Whether the demo is in this workspace already."""
    return bool(ws.ledger.events(topic=DEMO_MARKER, limit=1))


def seed_demo(ws: Workspace) -> int:
    """Add the demo unless it is there already; returns the number of events added (0 when it was)."""
    if ws.read_only:
        raise ReadOnlyError("a read-only snapshot cannot be seeded with the demo")
    if demo_seeded(ws):
        return 0
    start = ws.ledger.head[0]

    def respond(event: Event) -> None:
        # Published while the mesh handles `event`, so each reply and memory write is its causal child.
        turn = int(event.payload["turn"])
        reply = {"turn": turn, "text": _REPLIES[turn], "responder": "offline"}
        ws.publish("demo.chat.message_responded", reply, actor="assistant:grace", resource=_CONVERSATION)
        key = _MESSAGES[turn][2]
        if key is not None:
            ws.publish(
                "demo.memory.item_written",
                {"key": key, "text": event.payload["text"]},
                actor="assistant:grace",
                resource=f"memory:{key}",
            )

    def index(event: Event) -> None:
        ws.publish(
            "demo.memory.item_indexed",
            {"key": event.payload["key"], "terms": len(event.payload["text"].split())},
            actor="system",
            resource=f"memory:{event.payload['key']}",
        )

    subs = [
        ws.subscribe("demo.chat.message_received", respond, name="demo.responder"),
        ws.subscribe("demo.memory.item_written", index, name="demo.indexer"),
    ]
    try:
        for turn, (user, text, _key) in enumerate(_MESSAGES):
            ws.publish(
                "demo.chat.message_received",
                {"turn": turn, "user": user, "text": text},
                actor=user,
                resource=_CONVERSATION,
            )
            # One turn at a time, so the ledger order is the same whether delivery is inline or threaded.
            ws.mesh.drain()
    finally:
        for sub in subs:
            ws.mesh.unsubscribe(sub)
    latencies = [("demo_response_seconds", s, {"responder": "offline"}) for s in _RESPONSE_SECONDS]
    ws.metrics.record_many(latencies, kind="histogram", actor="demo")
    ws.metrics.record_many(
        [("demo_memory_items", 1, {}), ("demo_active_users", 1, {})], kind="gauge", actor="demo"
    )
    ws.metrics.record(
        "demo_messages_total", len(_MESSAGES), kind="counter", labels={"role": "user"}, actor="demo"
    )
    ws.checkpoint(actor="demo")
    added = ws.ledger.head[0] - start + 1
    ws.publish(DEMO_MARKER, {"events": added}, actor="system")
    return added
