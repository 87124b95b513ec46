"""Remedies: diagnosis from tracebacks, proposals as diffs, applying them through the governed sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from grace_core import Workspace
from grace_core.errors import PermissionDenied, SandboxError
from grace_core.remedy import diagnose, ruff_fix
from grace_core.sandbox import Limits
from tests.support import grace

PASSWORD = "correct horse battery staple 42"


@pytest.fixture
def rws(ws: Workspace) -> Workspace:
    ws.auth.register("ada", PASSWORD, role="admin", by="system")
    ws.auth.register("rita", PASSWORD, role="researcher", by="ada")
    ws.auth.register("vic", PASSWORD, role="viewer", by="ada")
    return ws


def _fixes(ws: Workspace, execution: str) -> list[dict[str, object]]:
    return ws.remedy.proposals(execution=execution).to_dict("records")


def test_missing_import_is_proposed_applied_and_works(rws: Workspace) -> None:
    ex = rws.sandbox.run('"""Doc."""\nprint(json.dumps({"a": 1}))\n', actor="rita")
    assert "NameError" in ex.stderr
    (prop,) = [p for p in _fixes(rws, ex.id) if p["kind"] == "missing_import"]
    assert prop["diff"].splitlines()[-2:] == ["+import json", ' print(json.dumps({"a": 1}))']
    assert prop["state"] == "proposed"
    result = rws.remedy.apply(prop["id"], actor="rita")
    assert result.worked
    assert result.execution.stdout == '{"a": 1}\n'
    assert rws.remedy.proposal(prop["id"])["state"] == "worked"
    applied = rws.ledger.get(result.event_id)
    assert applied is not None
    assert applied.payload["outcome"] == "worked"
    # the re-run is caused by the proposal, which is caused by the failure
    assert rws.ledger.get(result.execution.id).parent_id == prop["id"]  # type: ignore[union-attr]
    assert rws.ledger.get(prop["id"]).parent_id == ex.event_id  # type: ignore[union-attr]


def test_misspelled_name_gets_the_closest_match(rws: Workspace) -> None:
    ex = rws.sandbox.run("total = 0\nfor i in range(3):\n    totl += i\nprint(total)\n", actor="rita")
    props = [p for p in _fixes(rws, ex.id) if p["kind"] == "misspelled_name"]
    assert "-    totl += i" in props[0]["diff"]
    assert "+    total += i" in props[0]["diff"]
    assert rws.remedy.apply(props[0]["id"], actor="rita").execution.stdout == "3\n"


def test_misspelled_attribute_uses_pythons_suggestion(rws: Workspace) -> None:
    ex = rws.sandbox.run("import math\nprint(math.sqr(16))\n", actor="rita")
    (prop,) = [p for p in _fixes(rws, ex.id) if p["kind"] == "misspelled_name"]
    assert "+print(math.sqrt(16))" in prop["diff"]
    assert rws.remedy.apply(prop["id"], actor="rita").worked


def test_syntax_error_is_located_and_fixed_where_obvious(rws: Workspace) -> None:
    ex = rws.sandbox.run("def f(x)\n    return x * 2\nprint(f(21))\n", actor="rita")
    (prop,) = [p for p in _fixes(rws, ex.id) if p["kind"] == "syntax"]
    assert prop["line"] == 1
    assert "expected ':'" in prop["summary"]
    assert "+def f(x):" in prop["diff"]
    assert rws.remedy.apply(prop["id"], actor="rita").execution.stdout == "42\n"


def test_unclosed_bracket_and_python2_print() -> None:
    (p1,) = diagnose(
        "print(len([1, 2])\n", "  File \"/work/main.py\", line 1\nSyntaxError: '(' was never closed\n"
    )
    assert p1.patched == "print(len([1, 2]))\n"
    err = (
        '  File "/work/main.py", line 1\n'
        + "SyntaxError: Missing parentheses in call to 'print'. Did you mean print(...)?"
    )

    (p2,) = diagnose("print 'hi'\n", err)
    assert p2.patched == "print('hi')\n"


def test_an_unfixable_syntax_error_still_gets_its_location() -> None:
    (p,) = diagnose("x = = 1\n", '  File "/work/main.py", line 1\n    x = = 1\nSyntaxError: invalid syntax\n')
    assert p.kind == "syntax"
    assert p.line == 1
    assert p.patched is None
    assert "line 1" in p.summary


def test_timeouts_and_memory_get_advice_without_a_diff(rws: Workspace) -> None:
    ex = rws.sandbox.run("while True:\n    pass\n", actor="rita", limits=Limits(timeout_s=1))
    (prop,) = _fixes(rws, ex.id)
    assert prop["kind"] == "timeout"
    assert prop["diff"] == ""
    assert prop["state"] == "advice"
    assert "timeout_s" in prop["summary"]
    with pytest.raises(SandboxError, match="advice"):
        rws.remedy.apply(prop["id"], actor="rita")
    (mem,) = diagnose("x = 1", "", limit_hit="memory", limits={"memory_mb": 64})
    assert "64 MiB" in mem.summary
    assert mem.patched is None


def test_ruff_lint_fixes_are_proposed_last(rws: Workspace) -> None:
    ex = rws.sandbox.run("import os, sys\nprint(Counter('aab').most_common(1))\n", actor="rita")
    kinds = [p["kind"] for p in _fixes(rws, ex.id)]
    assert kinds == ["missing_import", "lint"]
    lint = _fixes(rws, ex.id)[1]
    assert "-import os, sys" in lint["diff"]


def test_ruff_fix_uses_a_fixed_configuration() -> None:
    fixed = ruff_fix("import os\nx = 1\nif x == None:\n    print(x)\n")
    assert fixed is not None
    assert "import os" not in fixed


def test_missing_third_party_module_is_explained() -> None:
    err = "Traceback (most recent call last):\n  File \"/work/main.py\", line 1, in <module>\n" \
          "ModuleNotFoundError: No module named 'numpy'\n"  # fmt: skip
    p = diagnose("import numpy\n", err)[0]
    assert p.kind == "missing_module"
    assert "standard library only" in p.summary
    err2 = err.replace("numpy", "colections")
    p2 = diagnose("import colections\n", err2)[0]
    assert p2.patched == "import collections\n"


def test_a_failed_application_is_recorded_and_counts_in_the_success_rate(rws: Workspace) -> None:
    assert rws.remedy.success_rate() is None
    ok = rws.sandbox.run("print(json.dumps(1))\n", actor="rita")
    rws.remedy.apply(_fixes(rws, ok.id)[0]["id"], actor="rita")
    # adding the import fixes the NameError, but the program fails later anyway
    bad = rws.sandbox.run("print(json.dumps(1))\nraise RuntimeError('later')\n", actor="rita")
    prop = next(p for p in _fixes(rws, bad.id) if p["kind"] == "missing_import")
    result = rws.remedy.apply(prop["id"], actor="rita")
    assert not result.worked
    assert rws.remedy.proposal(prop["id"])["state"] == "failed"
    assert rws.remedy.success_rate() == 0.5
    with pytest.raises(SandboxError, match="applied already"):
        rws.remedy.apply(prop["id"], actor="rita")
    summary = rws.metrics.summary()
    counted = summary[summary["metric"] == "grace_remedy_applied_total"]
    assert sorted(r["outcome"] for r in counted["labels"]) == ["failed", "worked"]


def test_applying_is_governed_like_any_run(rws: Workspace) -> None:
    ex = rws.sandbox.run("print(json.dumps(2))\n", actor="rita")
    prop = _fixes(rws, ex.id)[0]
    with pytest.raises(PermissionDenied):
        rws.remedy.apply(prop["id"], actor="vic")
    assert rws.remedy.proposal(prop["id"])["state"] == "proposed"


def test_code_with_secrets_is_diagnosed_but_not_patched(rws: Workspace) -> None:
    ex = rws.sandbox.run("key = 'AKIAIOSFODNN7EXAMPLE'\nprint(json.dumps(key))\n", actor="rita")
    props = _fixes(rws, ex.id)
    assert [p["kind"] for p in props] == ["error"]
    assert props[0]["patched_code"] is None


def test_the_subscriber_is_durable_and_does_not_duplicate(rws: Workspace) -> None:
    ex = rws.sandbox.run("print(json.dumps(3))\n", actor="rita")
    n = len(_fixes(rws, ex.id))
    rws.remedy._on_failed(rws.ledger.get(ex.event_id))  # type: ignore[arg-type] # a redelivery
    assert len(_fixes(rws, ex.id)) == n
    assert rws.ledger.cursor("mesh:remedy") >= rws.ledger.get(ex.event_id).seq  # type: ignore[union-attr]


@pytest.mark.slow
def test_cli_lists_and_applies_remedies(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    assert grace("init", "-w", path).returncode == 0
    (tmp_path / "bad.py").write_text("print(json.dumps([1, 2]))\n")
    ran = grace("sandbox", "run", tmp_path / "bad.py", "-w", path)
    assert ran.returncode == 1
    assert "NameError" in ran.stderr
    assert "(missing_import)" in ran.stderr
    listed = grace("sandbox", "remedies", "--state", "proposed", "--diff", "-w", path)
    assert "+import json" in listed.stdout
    pid = listed.stdout.splitlines()[1].split()[0]
    applied = grace("sandbox", "apply", pid, "-w", path)
    assert applied.returncode == 0
    assert applied.stdout == "[1, 2]\n"
    assert "worked" in applied.stderr


def test_replay_rebuilds_runs_and_proposals_from_the_ledger(rws: Workspace) -> None:
    from grace_core import projection_differences, replay

    ex = rws.sandbox.run("print(json.dumps(4))\n", actor="rita")
    rws.remedy.apply(_fixes(rws, ex.id)[0]["id"], actor="rita")
    copy = replay(rws, ":memory:")
    try:
        assert projection_differences(rws, copy) == {}
        assert len(copy.remedy.proposals()) == len(rws.remedy.proposals())
    finally:
        copy.close()
