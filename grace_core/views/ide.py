"""IDE: a code editor, runs in the governed sandbox, the console, remedies with one-click apply, save to memory.

Run sends the editor's code to ``ws.sandbox.run`` as the signed-in user: Hunter screens it, governance decides
(a researcher's run over five minutes waits for an admin's approval, which the Tasks view answers), and it runs
in isolation. The console shows stdout and stderr, the exit status, the duration, the limit that stopped it and
the isolation layers. A failed run is diagnosed by the remedy subscriber, which proposes asynchronously: the view
listens to ``remedy.*`` and shows the proposals for the run on screen as they arrive, each with its diff and an
Apply button that re-runs the patched code (``ws.remedy.apply``) and shows the outcome. Save stores the code in
memory at a path; Hunter scans it, and a secret is stored masked (the view says so and shows the alert).
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import pandas as pd
import panel as pn
import param

from grace_core.events import Event

from .base import GraceView, side_by_side
from .render import UserHTML, code_html, markdown_html, note_html, text_html

__all__ = ["EXAMPLE", "IDEView", "console_html"]

EXAMPLE = """\
# Runs in the sandbox: no network, capped CPU, memory and time.
from collections import Counter

words = "the quick brown fox jumps over the lazy dog the end".split()
for word, n in Counter(words).most_common(3):
    print(word, n)
"""
VIEWER_NOTE = "A viewer can read and edit here but not run or save: sign in as a researcher or an admin."


def console_html(execution: Any) -> str:
    """The console for one run: a status line, then stdout and stderr (already secret-masked by the sandbox)."""
    ok = execution.ok
    how = f"exit {execution.exit_code}" if execution.signal is None else f"signal {execution.signal}"
    parts = [f"{'✓ completed' if ok else '✗ failed'}", how, f"{execution.duration_s * 1e3:.0f} ms"]
    if execution.limit_hit:
        parts.append(f"stopped by the {execution.limit_hit} limit")
    layers = ", ".join(execution.isolation) or "none"
    missing = "; ".join(f"{k}: {v}" for k, v in sorted(dict(execution.missing_layers).items()))
    isolation = f"isolation: {layers}" + (f" (missing: {missing})" if missing else "")
    out = [
        f'<div class="grace-run-status grace-{"ok" if ok else "failed"}">{text_html(" · ".join(parts))}</div>',
        f'<div class="grace-muted">{text_html(isolation)}</div>',
    ]
    for name, text, truncated in (
        ("stdout", execution.stdout, execution.stdout_truncated),
        ("stderr", execution.stderr, execution.stderr_truncated),
    ):
        if text or name == "stdout":
            note = " (truncated)" if truncated else ""
            out.append(f'<div class="grace-muted">{name}{note}</div>')
            out.append(f'<div class="grace-{name}">{code_html(text or "")}</div>')
    return "".join(out)


class IDEView(GraceView):
    """Edit, run in the sandbox, read the console, apply a remedy, save to memory."""

    title = "IDE"
    live_patterns: ClassVar[tuple[str, ...]] = ("remedy.*",)

    code = param.String(default=EXAMPLE, doc="The code in the editor.")
    path = param.String(default="/code/main.py", doc="Where Save stores the code in memory.")
    timeout_s = param.Number(default=10.0, bounds=(1, 3600), doc="Wall-clock limit of a run (seconds).")
    execution_id = param.String(default="", doc="The last run shown in the console.")
    status = param.String(default="", doc="completed | failed | refused | '' (nothing ran yet).")
    output = param.String(default="", doc="stdout of the last run.")
    remedy_count = param.Integer(default=0, doc="Proposals with a fix shown for the last failed run.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._approval: tuple[str, str, float] | None = None  # (approval id, code, timeout) of a pending run
        self.editor = pn.widgets.CodeEditor(
            value=self.code, language="python", theme="github", height=300, sizing_mode="stretch_width"
        )
        self.editor.link(self, value="code", bidirectional=True)
        self.run_button = pn.widgets.Button(
            label="▶ Run", color="primary", disabled=not self._may_run(), description=self._why_not()
        )
        self.run_button.on_click(lambda _e: self.run())
        self.save_button = pn.widgets.Button(
            label="Save to memory",
            color="light",
            disabled=not self.may("memory.write"),
            description=self._why_not(),
        )
        self.save_button.on_click(lambda _e: self.save())
        self.role_note = UserHTML(note_html(VIEWER_NOTE, "warning"), visible=not self._may_run())
        self.console = UserHTML(
            f'<div class="grace-muted">{text_html("Run the code to see its output here.")}</div>',
            min_height=120,
        )
        self.remedies = pn.Column(sizing_mode="stretch_width")
        self.saved = UserHTML("")

    def _why_not(self) -> str | None:
        return None if self._may_run() else VIEWER_NOTE

    def _run_context(self) -> dict[str, Any]:
        return {"network": False, "timeout_s": float(self.timeout_s), "language": "python"}

    def _may_run(self) -> bool:
        # A run that needs an admin's approval may still be asked for: the view then shows the pending approval.
        return self.may("sandbox.execute", context=self._run_context(), review=True)

    # -- running -------------------------------------------------------------------------------------------
    def run(self) -> Any:
        """Run the editor's code in the sandbox as the user; shows the console and any remedy proposals."""
        from grace_core.errors import PermissionDenied
        from grace_core.sandbox import Limits

        if not self._may_run():
            self.message = f"refused: a {self.role} cannot run code"
            return None
        code, timeout = self.code, float(self.timeout_s)
        approval_id = None
        if self._approval is not None and self._approval[1:] == (code, timeout):
            approval_id = self._approval[0]  # the same run again: go on with the admin's answer
        try:
            execution = self.ws.sandbox.run(
                code,
                actor=self.actor,
                language="python",
                limits=Limits(timeout_s=timeout),
                approval_id=approval_id,
            )
        except PermissionDenied as exc:
            pending = getattr(exc.decision, "approval_id", None)
            self._approval = (pending, code, timeout) if pending else None
            self.status = "refused"
            self.message = f"refused: {exc}"
            self.console.object = (
                f'<div class="grace-run-status grace-failed">{text_html("✗ not run")}</div>'
                + text_html(str(exc))
            )
            return None
        except Exception as exc:  # noqa: BLE001 - a degraded mode or bad input: shown, the session goes on
            self.status = "refused"
            self.message = f"error: run: {exc}"
            return None
        self._approval = None
        self.show_run(execution)
        return execution

    def show_run(self, execution: Any) -> None:  # not `show`: that is Panel's "serve this view"
        """Show a run in the console and its remedies (the subscriber may have proposed some already)."""
        self.execution_id = execution.id
        self.status = "completed" if execution.ok else "failed"
        self.output = execution.stdout
        self.console.object = console_html(execution)
        self.message = ""
        self.refresh_remedies()

    # -- remedies ------------------------------------------------------------------------------------------
    def on_event(self, events: list[Event]) -> None:
        if any(
            e.payload.get("execution") == self.execution_id for e in events if e.topic == "remedy.proposed"
        ):
            self.refresh_remedies()

    def refresh(self) -> None:
        self.refresh_remedies()

    def proposals(self) -> Any:
        """The remedy proposals for the run in the console (a DataFrame; empty when none)."""
        return self.ws.remedy.proposals(execution=self.execution_id or "-")

    def refresh_remedies(self) -> None:
        if not self.execution_id or self.status != "failed":
            self.remedies[:] = []
            self.remedy_count = 0
            return
        frame = self.proposals()
        cards: list[Any] = []
        fixes = 0
        for row in frame.to_dict("records"):
            if pd.isna(row["patched_code"]):
                row["patched_code"] = None
            if row["patched_code"] is not None and not row["diff"]:
                continue  # a fix that changes nothing (ruff found nothing to fix): not worth a button
            is_fix = row["patched_code"] is not None
            fixes += int(is_fix)
            # The summary and the diff quote the user's code and its error: rendered, never fetched or run.
            head = UserHTML(f"<b>{text_html(row['kind'])}</b> — " + markdown_html(row["summary"]))
            items: list[Any] = [head]
            if row["diff"]:
                items.append(UserHTML(code_html(row["diff"], "diff")))
            if is_fix:
                done = row["state"] != "proposed"
                button = pn.widgets.Button(
                    label=f"Apply and re-run ({row['state']})" if done else "Apply and re-run",
                    color="success",
                    disabled=done or not self._may_run(),
                    description=self._why_not(),
                )
                button.on_click(functools.partial(self._apply_clicked, str(row["id"])))
                items.append(button)
            cards.append(pn.Card(*items, title=f"Remedy: {row['kind']}", sizing_mode="stretch_width"))
        self.remedy_count = fixes
        self.remedies[:] = (
            [pn.pane.Markdown("### Remedies"), *cards]
            if cards
            else [pn.pane.Markdown("*Diagnosing the failure…*")]
        )

    def _apply_clicked(self, proposal_id: str, _event: object) -> None:
        self.apply(proposal_id)

    def apply(self, proposal_id: str) -> Any:
        """Apply a proposal: the patched code re-runs in the sandbox; the editor and console show the outcome."""

        def go() -> Any:
            application = self.ws.remedy.apply(proposal_id, actor=self.actor)
            patched = self.ws.remedy.proposal(proposal_id)["patched_code"]
            self.code = patched
            self.show_run(application.execution)
            self.message = (
                "the remedy worked: the patched code ran cleanly"
                if application.worked
                else "the remedy was applied but the run still failed"
            )
            return application

        return self.act(
            "apply a remedy", go, action="sandbox.execute", context=self._run_context(), review=True
        )

    # -- saving --------------------------------------------------------------------------------------------
    def save(self) -> Any:
        """Store the code in memory at ``path`` (Hunter screens it; a secret is stored masked)."""

        def go() -> Any:
            code = self.code
            findings = self.ws.hunter.scan(code, target="memory")
            artifact = self.ws.memory.write(
                self.path, code, actor=self.actor, content_type="text/x-python", reason="saved from the IDE"
            )
            masked = artifact.content != code
            lines = [text_html(f"Saved {artifact.path} (version {artifact.version}).")]
            if findings:
                rules = ", ".join(sorted({f.rule for f in findings}))
                lines.append(
                    f'<div class="grace-hunter-alert grace-failed">{text_html(f"⚑ Hunter alert: {rules}")}</div>'
                )
            if masked:
                lines.append("<div>The secret was stored <b>masked</b>, as Hunter found it.</div>")
            self.saved.object = "".join(lines)
            self.message = f"saved {artifact.path} v{artifact.version}" + (" (masked)" if masked else "")
            return artifact

        return self.act("save to memory", go, action="memory.write")

    # -- layout --------------------------------------------------------------------------------------------
    def __panel__(self) -> pn.viewable.Viewable:
        timeout = pn.widgets.FloatInput.from_param(self.param.timeout_s, label="Time limit (s)", width=130)
        path = pn.widgets.TextInput.from_param(self.param.path, label="Memory path", width=260)
        left = pn.Column(
            self.editor,
            pn.FlexBox(self.run_button, timeout, align_items="flex-end"),
            pn.FlexBox(path, self.save_button, align_items="flex-end"),
            self.saved,
        )
        right = pn.Column(pn.pane.Markdown("### Console"), self.console, self.remedies)
        return pn.Column(
            self._status,
            self.role_note,
            side_by_side(left, right, min_width=400),
            sizing_mode="stretch_width",
        )
