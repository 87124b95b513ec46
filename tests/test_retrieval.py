"""Retrieval: what chat answers from (memory, tasks, alerts, insights), ranked by BM25, as the asker may read."""

from __future__ import annotations

from grace_core import Workspace
from grace_core.retrieval import retrieve


def readers(ws: Workspace) -> None:
    ws.auth.register("ada", "correct horse battery staple 42", role="admin", by="system")
    ws.auth.register("rita", "correct horse battery staple 42", role="researcher", by="ada")


def sources(ws: Workspace, text: str, user: str = "rita") -> list[str]:
    return [p.source for p in retrieve(ws, text, user=user)]


def test_passages_come_from_memory_paragraphs_tasks_and_alerts(ws: Workspace) -> None:
    readers(ws)
    ws.memory.write(
        "/projects/alpha/notes.md", "Intro.\n\nAlpha measurements live in DuckDB.", actor="system"
    )
    task = ws.tasks.create("Calibrate the spectrometer", kind="lab", actor="system")
    ws.hunter.screen("AKIAIOSFODNN7EXAMPLE", target="chat", actor="someone")
    alert_id = ws.sql("SELECT id FROM hunter_alerts")["id"].iloc[0]
    best = retrieve(ws, "where do alpha measurements live", user="rita")
    assert best[0].source == "memory:/projects/alpha/notes.md"
    assert best[0].text == "Alpha measurements live in DuckDB."  # the paragraph, not the whole note
    assert sources(ws, "spectrometer calibration") == [f"task:{task.id}"]
    assert f"alert:{alert_id}" in sources(ws, "security alert someone")
    assert retrieve(ws, "where do alpha measurements live", user="rita") == best  # deterministic
    assert retrieve(ws, "xylophone", user="rita") == []


def test_insights_are_passages(ws: Workspace) -> None:
    # the reflection engine's table (a projection): a row as it would write it
    ws.con.execute(
        "INSERT INTO insights (id, kind, key, text, score, evidence, evidence_count, reflection, trigger, "
        "window_start, window_end, created_at) VALUES ('ev-1', 'anomaly', 'loop:x', "
        "'Loop latency doubles after midnight', 1.0, [], 0, 1, 'interval', now(), now(), now())"
    )
    assert sources(ws, "latency after midnight") == ["insight:ev-1"]


def test_only_what_the_asker_may_read_is_a_passage(ws: Workspace) -> None:
    readers(ws)
    ws.governance.add_policy(
        {"id": "private", "effect": "deny", "roles": ["researcher"], "actions": ["memory.read:/private/**"]},
        actor="ada",
    )
    ws.memory.write("/private/salaries.md", "The salaries spreadsheet is in the vault.", actor="ada")
    ws.memory.write("/shared/vault.md", "The vault opens on Mondays.", actor="ada")
    asked = "where is the salaries spreadsheet vault"
    assert sources(ws, asked, "ada")[0] == "memory:/private/salaries.md"
    assert sources(ws, asked, "rita") == ["memory:/shared/vault.md"]
