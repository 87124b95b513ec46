"""`grace hunter ...` as a user runs it: real subprocesses, real files, exit codes that gate a CI job."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support import grace

from grace_core import open_workspace

KEY = "AKIAIOSFODNN7EXAMPLE"


def lines(result: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_scan_prints_one_json_line_per_finding_and_fails_on_high(tmp_path: Path) -> None:
    config = tmp_path / "settings.env"
    config.write_text(f"REGION=eu-west-1\nAWS_ACCESS_KEY_ID={KEY}\nNEXT={KEY}\n")
    result = grace("hunter", "scan", config)
    assert result.returncode == 1, result.stderr
    found = lines(result)
    assert [(f["rule"], f["severity"], f["line"], f["column"]) for f in found] == [
        ("aws-access-key-id", "critical", 2, 19),
        ("aws-access-key-id", "critical", 3, 6),
    ]
    text = config.read_text()
    assert text[found[0]["start"] : found[0]["end"]] == KEY
    assert found[0]["excerpt"] == "AKIA****"
    assert KEY not in result.stdout


def test_fail_on_sets_the_threshold(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text('password = "c0rrect-H0rse-FAKE"\n')  # a medium finding only
    assert grace("hunter", "scan", notes).returncode == 0
    assert grace("hunter", "scan", notes, "--fail-on", "medium").returncode == 1
    assert grace("hunter", "scan", notes, "--fail-on", "never").returncode == 0
    clean = grace("hunter", "scan", "-", stdin="nothing to report here\n")
    assert (clean.returncode, clean.stdout) == (0, "")


def test_the_target_follows_the_file_type(tmp_path: Path) -> None:
    body = "# we no longer call os.system(cmd) here\nprint('hello')\n"
    (tmp_path / "tool.py").write_text(body)
    (tmp_path / "tool.txt").write_text(body)
    assert lines(grace("hunter", "scan", tmp_path / "tool.py")) == []  # Python: the AST sees a comment
    (finding,) = lines(grace("hunter", "scan", tmp_path / "tool.txt"))  # plain file: the regex fires
    assert finding["rule"] == "code-shell-exec"
    assert (
        lines(grace("hunter", "scan", tmp_path / "tool.py", "--target", "chat"))[0]["rule"]
        == "code-shell-exec"
    )


@pytest.mark.slow
def test_with_a_workspace_its_current_rules_apply(tmp_path: Path) -> None:
    ws = tmp_path / "w.duckdb"
    assert grace("init", "--workspace", ws).returncode == 0
    secret = tmp_path / "s.txt"
    secret.write_text(f"{KEY}\n")
    assert grace("hunter", "disable", "aws-access-key-id", "--reason", "test", "--workspace", ws).stdout == (
        "aws-access-key-id disabled\n"
    )
    assert grace("hunter", "scan", secret, "--workspace", ws).returncode == 0  # that workspace's rules
    assert grace("hunter", "scan", secret).returncode == 1  # the default pack
    listed = {r["id"]: r for r in lines(grace("hunter", "rules", "--json", "--workspace", ws))}
    assert listed["aws-access-key-id"]["enabled"] is False
    assert listed["jwt"]["enabled"] is True
    assert grace("hunter", "enable", "aws-access-key-id", "--workspace", ws).returncode == 0
    assert grace("hunter", "scan", secret, "--workspace", ws).returncode == 1
    table = grace("hunter", "rules", "--workspace", ws).stdout.splitlines()
    assert table[0].split()[:3] == ["id", "severity", "category"]
    assert len(table) > 40


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = grace("hunter", "scan", tmp_path / "nope.txt")
    assert missing.returncode == 2
    assert missing.stderr.startswith("grace: error: cannot read")
    ws = tmp_path / "w.duckdb"
    grace("init", "--workspace", ws)
    unknown = grace("hunter", "disable", "no-such-rule", "--workspace", ws)
    assert unknown.returncode == 2
    assert "no rule 'no-such-rule'" in unknown.stderr
    pack = grace("hunter", "rules", "--pack", "--json")
    assert pack.returncode == 0
    assert len(lines(pack)) >= 40


@pytest.mark.slow
def test_rule_switches_pass_governance_and_a_researcher_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "w.duckdb"
    assert grace("init", "--workspace", ws).returncode == 0
    password = "correct horse battery staple\n"
    for name, role in (("ada", "admin"), ("rex", "researcher")):
        added = grace(
            "user", "add", name, "--role", role, "--password-stdin", "--workspace", ws, stdin=password
        )
        assert added.returncode == 0, added.stderr
    refused = grace("hunter", "disable", "jwt", "--by", "rex", "--workspace", ws)
    assert refused.returncode == 2
    assert refused.stderr.startswith("grace: error:")
    assert "rex may not hunter.rule.disable" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    listed = {r["id"]: r for r in lines(grace("hunter", "rules", "--json", "--workspace", ws))}
    assert listed["jwt"]["enabled"] is True  # nothing changed
    done = grace("hunter", "disable", "jwt", "--by", "ada", "--reason", "noisy", "--workspace", ws)
    assert (done.returncode, done.stdout) == (0, "jwt disabled\n")
    with open_workspace(ws, snapshot=True) as snap:
        assert not snap.hunter.rule("jwt").enabled
        decisions = [
            (e.actor, e.payload["action"], e.payload["effect"])
            for e in snap.ledger.events(topic="governance.decision")
        ]
        assert ("rex", "hunter.rule.disable", "deny") in decisions
        assert ("ada", "hunter.rule.disable", "allow") in decisions
        (change,) = snap.ledger.events(topic="hunter.rule_disabled")
        assert (change.actor, change.payload["reason"]) == ("ada", "noisy")


def test_a_file_over_the_scan_limit_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    from grace_core.hunter.scanner import MAX_TEXT

    big = tmp_path / "big.log"
    big.write_text("x" * (MAX_TEXT + 1))
    result = grace("hunter", "scan", big)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert (
        line
        == f"grace: error: the text has {MAX_TEXT + 1:,} characters; Hunter scans at most {MAX_TEXT:,} "
        + ("at a time (split it)")
    )
