"""The demo: one seeder for every way a workspace gets one (``grace init --demo``, ``grace serve``, ``grace lab``).

``seed_demo(ws)`` adds, once each:

1. the ledger demo: a short chat with causal children (replies and memory writes published from handlers, so
   lineage and impact queries have depth), a few metric samples and a signed checkpoint, then a
   ``workspace.demo_seeded`` event (skipped when that event is on the ledger already);
2. when the workspace has no users yet: three demo users, one per role -- ``ada`` (admin), ``bob``
   (researcher), ``vic`` (viewer) -- and content for every view: memory notes with two versions, a project
   plan, a chat question, a leaked (fake) AWS key that Hunter masks and raises an alert for, a checkpoint.

Each demo user gets a password of its own, generated for the workspace and kept among its secrets (never on the
ledger, never in the code), unless ``$GRACE_DEMO_PASSWORD`` is set, which then is every demo user's password.
``demo_logins(ws)`` gives them back, so ``grace serve`` prints them at every start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import settings
from .errors import ReadOnlyError
from .events import Event
from .governance import OPERATOR

if TYPE_CHECKING:
    from .workspace import Workspace

__all__ = [
    "DEMO_MARKER",
    "DEMO_USERS",
    "DemoLogin",
    "demo_logins",
    "demo_password",
    "demo_seeded",
    "seed_demo",
]

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
DEMO_USERS = (("ada", "admin"), ("bob", "researcher"), ("vic", "viewer"))
# The first memory notes (path, content, author, tags, reason), written in this order: a note, a new version, another.
_NOTES = (
    (
        "/notes/weekly-review.md",
        "# Weekly review\n\nThe weekly review is on Thursdays at 10:00.\n",
        "ada",
        ("meetings",),
        "first notes",
    ),
    (
        "/notes/weekly-review.md",
        "# Weekly review\n\nThe weekly review is on Fridays at 10:00, in the small room.\n",
        "ada",
        ("meetings",),
        "moved to Fridays",
    ),
    (
        "/projects/grace/plan.md",
        "# Plan\n\n1. Ledger and mesh\n2. Security core\n3. Chat and memory\n4. The apps\n",
        "bob",
        ("plan",),
        "project plan",
    ),
)
_PASSWORD_SECRET = "demo_password.{}"  # noqa: S105 - the name the password is kept under, not a password


@dataclass(frozen=True)
class DemoLogin:
    """A demo user and the password it signs in with."""

    name: str
    role: str
    password: str


def demo_seeded(ws: Workspace) -> bool:
    """Whether the ledger demo is in this workspace already."""
    return bool(ws.ledger.events(topic=DEMO_MARKER, limit=1))


def demo_password(ws: Workspace, name: str) -> str:
    """Demo user ``name``'s password: ``$GRACE_DEMO_PASSWORD``, else its own, generated once and kept."""
    given = settings.from_env(settings.DEMO_PASSWORD)
    if given is not None:
        return given
    return ws.secrets.generate(_PASSWORD_SECRET.format(name), nbytes=12, text=True).decode()


def demo_logins(ws: Workspace) -> list[DemoLogin]:
    """The demo users of this workspace with their passwords (empty when it has none, or lost their keys)."""
    given = settings.from_env(settings.DEMO_PASSWORD)
    logins = []
    for name, _ in DEMO_USERS:
        password = given or ws.secrets.text(_PASSWORD_SECRET.format(name))
        role = ws.auth.role_of(name)
        if password is not None and role is not None:
            logins.append(DemoLogin(name, role, password))
    return logins


def seed_demo(ws: Workspace) -> int:
    """Add what of the demo is missing (see the module docstring); returns the events added (0: nothing)."""
    if ws.read_only:
        raise ReadOnlyError("a read-only snapshot cannot be seeded with the demo")
    start = ws.ledger.head[0]
    if not demo_seeded(ws):
        _seed_ledger_demo(ws)
    if ws.auth.users().empty:
        _seed_users_and_content(ws)
    return ws.ledger.head[0] - start


def _seed_ledger_demo(ws: Workspace) -> None:
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
            actor=OPERATOR,
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
    ws.checkpoint(actor=OPERATOR)
    added = ws.ledger.head[0] - start + 1
    ws.publish(DEMO_MARKER, {"events": added}, actor=OPERATOR)


def _seed_users_and_content(ws: Workspace) -> None:
    for name, role in DEMO_USERS:
        ws.auth.register(name, demo_password(ws, name), role=role, by=OPERATOR)
    for path, content, actor, tags, reason in _NOTES:
        ws.memory.write(path, content, actor=actor, tags=tags, reason=reason)
    ws.chat.send("ada", "When is the weekly review?")
    # A leaked credential in a note: Hunter masks it, raises an alert and opens a task.
    ws.memory.write(
        "/projects/grace/deploy.md",
        "Deploy with AWS key AKIAQ7Z3EXAMPLE4KEYZ and region eu-west-1.\n",
        actor="bob",
        reason="deployment notes",
    )
    ws.mesh.drain()
    ws.checkpoint(actor=OPERATOR)
