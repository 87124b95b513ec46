"""The IDE view: runs in the sandbox as the user, the console, remedies applied in one click, save to memory."""

from __future__ import annotations

from grace_core.views.ide import IDEView

SECRET = "AKIAQ7Z3UITESTKEY123"


def test_run_shows_output_status_and_isolation_in_the_console(vws):
    view = IDEView(ws=vws, user="bob", role="researcher")
    view.editor.value = "print('hello from the sandbox')"  # typing in the editor sets the code
    execution = view.run()
    assert execution is not None
    assert execution.ok
    assert view.status == "completed"
    assert "hello from the sandbox" in view.output
    assert "exit 0" in view.console.object
    assert "isolation:" in view.console.object
    assert view.remedy_count == 0
    row = vws.sql("SELECT actor, status FROM sandbox_executions WHERE id = ?", [execution.id]).iloc[0]
    assert (row["actor"], row["status"]) == ("bob", "completed")  # ran as the signed-in user


def test_a_failed_run_gets_a_remedy_whose_apply_reruns_and_works(vws):
    view = IDEView(ws=vws, user="bob", role="researcher")
    view.code = "print(json.dumps({'a': 1}))"
    view.run()
    assert view.status == "failed"
    assert "NameError" in view.console.object
    assert view.remedy_count >= 1  # proposed by the remedy subscriber, delivered to the view live
    proposals = view.proposals()
    fix = proposals[proposals["kind"] == "missing_import"].iloc[0]
    card_text = " ".join(
        str(getattr(pane, "object", ""))
        for card in view.remedies.objects
        for pane in getattr(card, "objects", [])
    )
    assert "import json" in card_text  # the diff is shown
    application = view.apply(fix["id"])
    assert application.worked
    assert view.status == "completed"
    assert view.code.startswith("import json")  # the editor now holds the patched code
    assert '{"a": 1}' in view.output
    assert "worked" in view.message
    assert vws.remedy.proposal(fix["id"])["state"] == "worked"


def test_a_viewer_cannot_run_or_save_and_is_told_why(vws):
    view = IDEView(ws=vws, user="vic", role="viewer")
    assert view.run_button.disabled
    assert view.save_button.disabled
    assert view.role_note.visible
    assert "viewer" in view.role_note.object
    assert view.run() is None
    assert view.message.startswith("refused")
    assert vws.sql("SELECT count(*) AS n FROM sandbox_executions")["n"][0] == 0


def test_save_to_memory_is_scanned_alerted_and_stored_masked(vws):
    view = IDEView(ws=vws, user="bob", role="researcher")
    view.path = "/code/deploy.py"
    view.code = f"KEY = '{SECRET}'\n"
    artifact = view.save()
    assert artifact.version == 1
    assert SECRET not in vws.memory.read("/code/deploy.py").content
    assert "Hunter alert" in view.saved.object
    assert "aws-access-key-id" in view.saved.object
    assert "masked" in view.saved.object
    assert "aws-access-key-id" in set(vws.hunter.alerts()["rule"])


def test_a_long_run_waits_for_approval_then_runs_once_an_admin_approves(vws):
    view = IDEView(ws=vws, user="bob", role="researcher")
    view.code = "print('long job')"
    view.timeout_s = 600  # over five minutes: a researcher needs an admin's approval
    assert view.run() is None
    assert view.status == "refused"
    assert "approval" in view.message
    approval_id = vws.governance.approvals("pending")["id"].iloc[0]
    vws.governance.approve(approval_id, by="ada", note="fine")
    execution = view.run()  # the same run again goes ahead with the approval
    assert execution is not None
    assert execution.ok
    assert "long job" in view.output
