"""Memory: paths, versions, listing, moves, deletes, diffs, audit, governance, Hunter masking, search, import
and export, projection and replay."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest

import grace_core as g
from grace_core.errors import ArtifactError, PermissionDenied
from grace_core.memory import normalise_path

PASSWORD = "correct horse battery staple 9"


@pytest.fixture(autouse=True)
def users(ws: g.Workspace) -> None:
    """ada (admin), alice and bob (researchers), vic (viewer): memory writes pass governance."""
    ws.auth.register("ada", PASSWORD, role="admin", by="system")
    for name in ("alice", "bob"):
        ws.auth.register(name, PASSWORD, role="researcher", by="ada")
    ws.auth.register("vic", PASSWORD, role="viewer", by="ada")


def test_write_read_and_versions(ws: g.Workspace) -> None:
    first = ws.memory.write("/projects/alpha/notes.md", "# v1", actor="alice", tags=["alpha", "notes"])
    second = ws.memory.write("/projects/alpha/notes.md", "# v2", actor="alice", reason="typo")
    assert (first.version, second.version) == (1, 2)
    assert ws.memory.read("/projects/alpha/notes.md").content == "# v2"
    assert ws.memory.read("/projects/alpha/notes.md", version=1).content == "# v1"
    topics = list(ws.events(topic="memory.item.*")["topic"])
    assert topics == ["memory.item.created", "memory.item.updated"]
    with pytest.raises(ArtifactError, match="no version 3"):
        ws.memory.read("/projects/alpha/notes.md", version=3)


def test_a_write_returns_the_artifact_a_read_gives(ws: g.Workspace, clock: g.ManualClock) -> None:
    """What write returns is what a read gives right after: the stored (masked) content, the kept tags, the
    creator as owner after someone else's update, the version and its time."""
    first = ws.memory.write("/projects/shared/plan.md", "# plan", actor="alice", tags=["b", "a"])
    assert first == ws.memory.read("/projects/shared/plan.md")
    clock.advance(90)
    second = ws.memory.write("/projects/shared/plan.md", "deploy key AKIAQ7Z3EXAMPLE4KEYZ", actor="bob")
    assert second == ws.memory.read("/projects/shared/plan.md")
    assert (second.owner, second.tags, second.version) == ("alice", ("a", "b"), 2)
    assert "AKIAQ7Z3EXAMPLE4KEYZ" not in second.content
    assert second.updated_at - first.updated_at == timedelta(seconds=90)


def test_list_by_folder(ws: g.Workspace) -> None:
    ws.memory.write("/projects/alpha/a.md", "a", actor="alice")
    ws.memory.write("/projects/beta/b.md", "b", actor="bob")
    ws.memory.write("/projects/alphabet.md", "c", actor="bob")
    assert set(ws.memory.list("/projects/alpha")["path"]) == {"/projects/alpha/a.md"}
    assert len(ws.memory.list()) == 3


@pytest.mark.parametrize("path", ["relative.md", "/a/../b", "/a/./b", "/", "/a/\x00b", "", "/" + "x" * 1100])
def test_bad_paths_are_refused(ws: g.Workspace, path: str) -> None:
    head = ws.ledger.head
    with pytest.raises(ArtifactError):
        ws.memory.write(path, "text", actor="alice")
    assert ws.ledger.head == head


def test_paths_are_normalised() -> None:
    assert normalise_path("//projects//alpha/notes.md/") == "/projects/alpha/notes.md"


def test_missing_artifact(ws: g.Workspace) -> None:
    with pytest.raises(ArtifactError, match="no memory artifact"):
        ws.memory.read("/nothing/here.md")


def test_replay_rebuilds_memory(ws: g.Workspace) -> None:
    ws.memory.write("/a.md", "one", actor="alice")
    ws.memory.write("/a.md", "two", actor="alice")
    copy = g.replay(ws, ":memory:")
    try:
        assert g.projection_differences(ws, copy) == {}
        assert copy.memory.read("/a.md", version=1).content == "one"
    finally:
        copy.close()


# -- moves, deletes, versions, diffs, audit -------------------------------------------------------------------
def test_move_and_rename_keep_versions_and_history(ws: g.Workspace) -> None:
    ws.memory.write("/projects/alpha/notes.md", "one\n", actor="alice")
    ws.memory.write("/projects/alpha/notes.md", "two\n", actor="bob", reason="second thoughts")
    assert ws.memory.move("/projects/alpha/notes.md", "/archive/notes.md", actor="alice") == [
        "/archive/notes.md"
    ]
    new = ws.memory.rename("/archive/notes.md", "old-notes.md", actor="alice", reason="clearer")
    assert new == "/archive/old-notes.md"
    with pytest.raises(ArtifactError, match="no memory artifact"):
        ws.memory.read("/projects/alpha/notes.md")
    assert ws.memory.read(new, version=1).content == "one\n"
    assert list(ws.memory.versions(new)["version"]) == [1, 2]
    audit = ws.memory.audit(new)
    assert list(audit["action"]) == ["created", "updated", "moved", "moved"]
    assert list(audit["actor"]) == ["alice", "bob", "alice", "alice"]
    assert audit["reason"].iloc[1] == "second thoughts"
    assert audit["reason"].iloc[3] == "clearer"
    assert audit["new_path"].iloc[3] == new


def test_moving_a_folder_moves_everything_in_it(ws: g.Workspace) -> None:
    for name in ("a.md", "sub/b.md"):
        ws.memory.write(f"/projects/alpha/{name}", name, actor="alice")
    ws.memory.write("/projects/alphabet.md", "not in the folder", actor="alice")
    moved = ws.memory.move("/projects/alpha", "/projects/gamma", actor="alice")
    assert moved == ["/projects/gamma/a.md", "/projects/gamma/sub/b.md"]
    assert set(ws.memory.list()["path"]) == {*moved, "/projects/alphabet.md"}


def test_move_refuses_taken_targets_and_missing_sources(ws: g.Workspace) -> None:
    ws.memory.write("/a.md", "a", actor="alice")
    ws.memory.write("/b.md", "b", actor="alice")
    head = ws.ledger.head
    with pytest.raises(ArtifactError, match=r"cannot move to /b\.md"):
        ws.memory.move("/a.md", "/b.md", actor="alice")
    with pytest.raises(ArtifactError, match="no memory artifact or folder"):
        ws.memory.move("/nothing.md", "/c.md", actor="alice")
    assert ws.ledger.head == head


def test_soft_delete_and_restore(ws: g.Workspace) -> None:
    ws.memory.write("/notes/todo.md", "buy milk", actor="alice")
    ws.memory.delete("/notes/todo.md", actor="bob", reason="done")
    with pytest.raises(ArtifactError, match="no memory artifact"):
        ws.memory.read("/notes/todo.md")
    assert ws.memory.list().empty
    assert list(ws.memory.list(deleted=True)["path"]) == ["/notes/todo.md"]
    assert ws.memory.search("milk").empty
    with pytest.raises(ArtifactError, match="restore it first"):
        ws.memory.write("/notes/todo.md", "again", actor="alice")
    restored = ws.memory.restore("/notes/todo.md", actor="alice")
    assert (restored.content, restored.version) == ("buy milk", 1)
    assert list(ws.memory.search("milk")["path"]) == ["/notes/todo.md"]
    audit = ws.memory.audit("/notes/todo.md")
    assert list(audit["action"]) == ["created", "deleted", "restored"]
    assert audit["reason"].iloc[1] == "done"


def test_diff_and_restore_version(ws: g.Workspace) -> None:
    path = "/docs/plan.md"
    ws.memory.write(path, "step one\nstep two\n", actor="alice", tags=["plan"])
    ws.memory.write(path, "step one\nstep 2\nstep three\n", actor="alice", tags=["plan", "draft"])
    diff = ws.memory.diff(path, 1, 2)
    assert ws.memory.write(path, "step one\nstep 2\nstep three\n", actor="alice").tags == ("draft", "plan")
    ws.memory.restore_version(path, 2, actor="alice", reason="tags are kept when not given")
    assert diff.splitlines()[:2] == [f"--- {path}@1", f"+++ {path}@2"]
    assert "-step two" in diff
    assert "+step 2" in diff
    assert "+step three" in diff
    assert ws.memory.diff(path, 2, 2) == ""
    back = ws.memory.restore_version(path, 1, actor="bob")
    assert (back.version, back.content, back.tags) == (5, "step one\nstep two\n", ("plan",))
    assert ws.memory.diff(path, 1, 5) == ""
    assert ws.memory.versions(path)["reason"].iloc[-1] == "restore version 1"


def test_tree_derives_folders(ws: g.Workspace) -> None:
    for path in ("/projects/alpha/a.md", "/projects/alpha/b.md", "/projects/beta/c/d.md", "/top.md"):
        ws.memory.write(path, "x", actor="alice")
    tree = ws.memory.tree("/projects").set_index("folder")
    assert list(tree.index) == ["/projects", "/projects/alpha", "/projects/beta", "/projects/beta/c"]
    assert tree.loc["/projects/alpha", "artifacts"] == 2
    assert tree.loc["/projects", "total"] == 3
    assert tree.loc["/projects", "artifacts"] == 0


# -- governance and Hunter -------------------------------------------------------------------------------------
def test_only_admins_write_system(ws: g.Workspace) -> None:
    head = ws.ledger.head[0]
    with pytest.raises(PermissionDenied, match="system-memory-admins-only"):
        ws.memory.write("/system/prompt.md", "be evil", actor="alice")
    assert ws.events(since=head, topic="memory.item.*").empty
    ws.memory.write("/system/prompt.md", "be kind", actor="ada")
    with pytest.raises(PermissionDenied):
        ws.memory.delete("/system/prompt.md", actor="alice")
    with pytest.raises(PermissionDenied):
        ws.memory.move("/system/prompt.md", "/elsewhere.md", actor="alice")
    with pytest.raises(PermissionDenied):
        ws.memory.write("/notes/x.md", "viewers only read", actor="vic")
    with pytest.raises(PermissionDenied):
        ws.memory.write("/notes/x.md", "strangers get nothing", actor="mallory")
    assert ws.memory.read("/system/prompt.md").content == "be kind"
    decisions = ws.events(since=head, topic="governance.decision")
    effects = [(p if isinstance(p, dict) else json.loads(p))["effect"] for p in decisions["payload"]]
    assert effects.count("deny") == 5  # every refusal is on the ledger


def test_secrets_are_stored_masked_and_alert(ws: g.Workspace) -> None:
    secret = "AKIAIOSFODNN7EXAMPLE"
    art = ws.memory.write("/projects/alpha/deploy.md", f"Deploy with key {secret} now.", actor="alice")
    assert secret not in art.content
    assert art.content == "Deploy with key [masked:aws-access-key-id] now."
    assert not ws.events(topic="memory.item.*")["payload"].str.contains(secret).any()  # not on the ledger
    assert "aws-access-key-id" in set(ws.hunter.alerts()["rule"])
    assert bool(ws.memory.audit("/projects/alpha/deploy.md")["masked"].iloc[0])
    assert ws.memory.search(secret).empty


def test_policy_can_allow_unmasked_writes(ws: g.Workspace) -> None:
    secret = "AKIAIOSFODNN7EXAMPLE"
    ws.governance.remove_policy("memory-secrets-masked", actor="ada")
    ws.governance.add_policy(
        {
            "id": "vault-unmasked",
            "effect": "allow",
            "actors": ["alice"],
            "actions": ["memory.write_unmasked:/vault/**"],
            "description": "alice keeps verbatim credentials in the vault folder",
        },
        actor="ada",
    )
    alerts = len(ws.hunter.alerts())
    assert ws.memory.write("/vault/aws.md", secret, actor="alice").content == secret
    assert len(ws.hunter.alerts()) == alerts + 1  # the alert fires all the same
    assert ws.memory.write("/notes/aws.md", secret, actor="alice").content != secret


# -- search ----------------------------------------------------------------------------------------------------
def test_search_ranks_and_filters(ws: g.Workspace, clock: g.ManualClock) -> None:
    ws.memory.write(
        "/projects/alpha/fox.md", "The fox jumps. The fox runs. Fox!", actor="alice", tags=["zoo"]
    )
    ws.memory.write(
        "/projects/beta/dog.md", "The dog sleeps next to a fox.", actor="bob", tags=["zoo", "pets"]
    )
    clock.advance(hours=1)
    ws.memory.write("/notes/cat.md", "A cat. Error 4711 was raised.", actor="bob")
    hits = ws.memory.search("fox")
    assert list(hits["path"]) == ["/projects/alpha/fox.md", "/projects/beta/dog.md"]
    assert hits["score"].iloc[0] > hits["score"].iloc[1] > 0
    assert "fox" in hits["snippet"].iloc[1]
    assert list(ws.memory.search("foxes")["path"])[:1] == ["/projects/alpha/fox.md"]  # stemmed
    assert list(ws.memory.search("4711")["path"]) == ["/notes/cat.md"]  # numbers are words
    assert list(ws.memory.search("fox", prefix="/projects/beta")["path"]) == ["/projects/beta/dog.md"]
    assert list(ws.memory.search("fox", tags=["pets"])["path"]) == ["/projects/beta/dog.md"]
    assert list(ws.memory.search("fox", owner="alice")["path"]) == ["/projects/alpha/fox.md"]
    late = clock.now() - timedelta(minutes=30)
    assert list(ws.memory.search("cat fox", since=late)["path"]) == ["/notes/cat.md"]
    assert set(ws.memory.search("cat fox", until=late)["path"]) == {
        "/projects/alpha/fox.md",
        "/projects/beta/dog.md",
    }
    assert len(ws.memory.search("the", limit=1)) <= 1
    assert ws.memory.search("zebra").empty
    with pytest.raises(ArtifactError):
        ws.memory.search("  ")


def test_search_index_follows_changes_without_a_rebuild(ws: g.Workspace) -> None:
    ws.memory.write("/a.md", "apples", actor="alice")
    assert list(ws.memory.search("apples")["path"]) == ["/a.md"]
    built = ws.memory.last_index_build_s
    assert built is not None
    ws.memory.write("/a.md", "pears", actor="alice")
    ws.memory.move("/a.md", "/b.md", actor="alice")
    assert ws.memory.search("apples").empty
    assert list(ws.memory.search("pears")["path"]) == ["/b.md"]
    status = ws.memory.index_status()
    assert status["base_docs"] == 1
    assert status["delta_paths"] == 2  # /a.md left the base, /b.md is in the delta
    assert ws.memory.last_index_build_s == built  # no full rebuild happened


def test_every_change_is_in_the_very_next_search(ws: g.Workspace, clock: g.ManualClock) -> None:
    mem = ws.memory
    mem.write("/p/a.md", "quartz quartz granite", actor="alice", tags=["rock"])
    mem.write("/p/b.md", "granite basalt", actor="bob", tags=["rock"])
    mem.write("/q/c.md", "basalt", actor="bob")
    assert list(mem.search("quartz")["path"]) == ["/p/a.md"]  # builds the big index
    clock.advance(hours=1)
    cut = clock.now()
    mem.write("/p/b.md", "quartz everywhere, quartz only", actor="alice", tags=["rock", "new"])
    hits = mem.search("quartz")
    assert list(hits["path"]) == ["/p/b.md", "/p/a.md"]  # the update outranks the untouched artifact
    assert hits["version"].tolist() == [2, 1]
    assert list(mem.search("quartz", tags=["new"])["path"]) == ["/p/b.md"]
    assert list(mem.search("quartz", since=cut)["path"]) == ["/p/b.md"]
    assert list(mem.search("quartz", until=cut)["path"]) == ["/p/a.md"]
    assert list(mem.search("quartz", owner="alice")["path"]) == ["/p/a.md"]  # the owner is the creator
    assert list(mem.search("granite", owner="bob")["path"]) == []  # b.md no longer says granite
    assert list(mem.search("basalt", owner="bob")["path"]) == ["/q/c.md"]
    mem.move("/p", "/r", actor="alice")
    assert set(mem.search("quartz", prefix="/r")["path"]) == {"/r/a.md", "/r/b.md"}
    assert mem.search("quartz", prefix="/p").empty
    mem.delete("/r/b.md", actor="alice")
    assert list(mem.search("quartz")["path"]) == ["/r/a.md"]
    mem.restore("/r/b.md", actor="alice")
    assert list(mem.search("quartz")["path"]) == ["/r/b.md", "/r/a.md"]
    mem.write("/new/x.md", "zirconium is new to the vocabulary", actor="bob")
    assert list(mem.search("zirconium")["path"]) == ["/new/x.md"]  # a word the big index never saw


_NO_FILTERS = {"prefix": None, "tags": [], "owner": None, "since": None, "until": None, "limit": 10}


def test_delta_scores_exactly_like_a_full_rebuild(ws: g.Workspace, clock: g.ManualClock) -> None:
    import random

    from grace_core.memory.index import SearchIndex

    rng = random.Random(5)
    words = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "heath", "iris", "jade", "kelp"]
    mem = ws.memory
    for i in range(60):
        text = " ".join(rng.choices(words, k=rng.randint(3, 25)))
        mem.write(f"/c/{i % 4}/{i:03d}.md", text, actor=rng.choice(["alice", "bob"]), tags=[words[i % 3]])
    mem.search("amber")  # the big index
    for step in range(40):
        clock.advance(minutes=1)
        i = rng.randrange(60)
        path = f"/c/{i % 4}/{i:03d}.md"
        live = set(mem.list()["path"])
        if path not in live:
            continue
        action = rng.choice(["update", "update", "delete", "move"])
        if action == "update":
            mem.write(path, " ".join(rng.choices([*words, "novel"], k=rng.randint(1, 30))), actor="alice")
        elif action == "delete":
            mem.delete(path, actor="bob")
        else:
            mem.move(path, f"/moved/{step}.md", actor="alice")
        if step % 4:
            continue  # compare every fourth step: a full rebuild per comparison is the slow part
        fresh = SearchIndex(ws.ledger)  # what a full rebuild would answer now
        try:
            for query, filters in [
                ("amber cobalt", {}),
                ("novel", {}),
                ("jade", {"prefix": "/c/1/"}),
                ("ember iris", {"tags": ["basalt"]}),
                ("garnet", {"owner": "bob"}),
            ]:
                ours = mem.search(query, **filters)  # type: ignore[arg-type]
                full = fresh.query(query, **{**_NO_FILTERS, **filters})  # type: ignore[arg-type]
                assert list(ours["path"]) == list(full["path"]), (step, query)
                assert ours["score"].tolist() == pytest.approx(full["score"].tolist(), rel=1e-9)
        finally:
            fresh.close()
    assert mem.index_status()["delta_paths"] > 0


def test_a_big_delta_is_folded_in_by_a_background_rebuild(ws: g.Workspace) -> None:
    mem = ws.memory
    for i in range(10):
        mem.write(f"/d/{i}.md", f"common word{i}", actor="alice")
    mem.search("common")
    mem._search.min_threshold = 5  # a tiny threshold, so a few writes start the rebuild
    for i in range(10, 20):
        mem.write(f"/d/{i}.md", f"common word{i}", actor="alice")
    assert len(mem.search("common", limit=100)) == 20  # exact meanwhile; this search starts the rebuild
    mem._search.rebuild(wait=True)  # waits for the running one (and rebuilds again)
    assert mem.index_status()["base_docs"] == 20
    mem.delete("/d/3.md", actor="alice")
    hits = mem.search("common", limit=100)
    assert len(hits) == 19
    assert "/d/3.md" not in set(hits["path"])


@pytest.mark.slow
def test_search_right_after_a_write_is_fast(ws: g.Workspace) -> None:
    from grace_core.bench import memory_corpus

    corpus = memory_corpus(5_000)
    for start in range(0, len(corpus), 10_000):
        ws.publish_many(corpus[start : start + 10_000], actor="alice")
    ws.memory.search("ledger")
    times = []
    for i in range(30):
        ws.memory.write(f"/bench/new/{i}.md", f"ledger merkle fresh{i}", actor="alice")
        started = time.perf_counter()
        hits = ws.memory.search(f"fresh{i} ledger")
        times.append(time.perf_counter() - started)
        assert hits["path"].iloc[0] == f"/bench/new/{i}.md"
    assert sorted(times)[-2] < 0.25  # generous for a shared CI machine; the bench measures the real figure


# -- import and export -----------------------------------------------------------------------------------------
def test_import_and_export_a_tree(ws: g.Workspace, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "alpha" / "deep").mkdir(parents=True)
    (src / "alpha" / "notes.md").write_text("# notes\n", encoding="utf-8")
    (src / "alpha" / "deep" / "data.txt").write_text("numbers 1 2 3\n", encoding="utf-8")
    (src / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
    written = ws.memory.import_tree(src, into="/projects", actor="alice")
    assert written == ["/projects/alpha/deep/data.txt", "/projects/alpha/notes.md"]
    assert ws.memory.read("/projects/alpha/deep/data.txt").content_type == "text/plain"
    assert ws.memory.import_tree(src, into="/projects", actor="alice") == []  # unchanged: no new versions
    out = tmp_path / "out"
    files = ws.memory.export_tree("/projects/alpha", out)
    assert sorted(p.relative_to(out).as_posix() for p in files) == ["deep/data.txt", "notes.md"]
    assert (out / "notes.md").read_text(encoding="utf-8") == "# notes\n"
    with pytest.raises(PermissionDenied):
        ws.memory.import_tree(src, into="/system", actor="alice")


def test_an_export_that_cannot_be_written_whole_writes_nothing(ws: g.Workspace, tmp_path: Path) -> None:
    ws.memory.write("/a", "a file\n", actor="alice")
    ws.memory.write("/a/b.md", "a file in the folder /a\n", actor="alice")
    with pytest.raises(ArtifactError, match="/a would be both a file and a folder"):
        ws.memory.export_tree("/", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").write_text("in the way\n")
    with pytest.raises(ArtifactError, match="taken is a file, not a folder"):
        ws.memory.export_tree("/a/b.md", tmp_path / "taken" / "sub")
    assert [p.name for p in ws.memory.export_tree("/a/b.md", tmp_path / "ok")] == ["b.md"]


def test_replay_rebuilds_full_memory(ws: g.Workspace) -> None:
    ws.memory.write("/p/a.md", "orchid", actor="alice", tags=["t"])
    ws.memory.write("/p/a.md", "two AKIAIOSFODNN7EXAMPLE", actor="alice")
    ws.memory.move("/p", "/q", actor="alice")
    ws.memory.delete("/q/a.md", actor="bob")
    ws.memory.restore("/q/a.md", actor="bob")
    ws.memory.restore_version("/q/a.md", 1, actor="alice")
    ws.memory.search("orchid")
    copy = g.replay(ws, ":memory:")
    try:
        assert g.projection_differences(ws, copy) == {}
        assert copy.memory.read("/q/a.md").content == "orchid"
        assert list(copy.memory.search("orchid")["path"]) == ["/q/a.md"]
    finally:
        copy.close()


def test_search_is_fast_enough_on_a_few_thousand_artifacts(ws: g.Workspace) -> None:
    from grace_core.mesh import Message

    words = ["alpha", "beta", "gamma", "delta", "kappa", "sigma", "omega", "zeta"]
    messages = [
        Message(
            "memory.item.created",
            {
                "path": f"/bulk/{i:05d}.md",
                "content": f"note {i} about {words[i % 8]} and {words[(i * 7) % 8]} item{i % 97}",
                "content_type": "text/markdown",
                "tags": [],
                "version": 1,
                "reason": "",
            },
            f"memory:/bulk/{i:05d}.md",
        )
        for i in range(2000)
    ]
    ws.publish_many(messages, actor="alice")
    ws.memory.search("alpha")  # builds the index
    started = time.perf_counter()
    for _ in range(10):
        hits = ws.memory.search("gamma item5")
    assert (time.perf_counter() - started) / 10 < 0.25
    assert len(hits) == 10
