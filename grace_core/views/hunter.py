"""Hunter: live alerts with a severity filter, the rules with hit counts and precision, and a box to test text.

An admin edits the selected rule as YAML (its definition without ``id`` and ``enabled``) and saves it with
``ws.hunter.update_rule``: the engine validates it (regex, examples that must still behave) and governance
decides, so a bad edit or a refusal shows as the view's message and changes nothing.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, cast

import pandas as pd
import panel as pn
import param
import yaml

from grace_core.errors import RuleError, ScanError
from grace_core.hunter.rules import SEVERITIES, TARGETS, severity_rank

from .base import GraceView, frame_for_table, short
from .render import UserHTML, text_html

__all__ = ["HunterView", "precision_frame", "rule_changes", "rule_yaml"]


_WRAP = {"type": "textarea"}  # a long cell wraps instead of being cut off (the formatter escapes it)
_ALERT_COLUMNS = ["ts", "severity", "rule", "target", "actor", "resource", "count", "excerpts", "id"]
_RULE_COLUMNS = ["id", "enabled", "severity", "category", "description", "hits", "precision", "recall"]
# What an optional field of a rule means when the edited YAML leaves it out (as in a rule pack). The required
# fields (description, severity) and the examples keep their current value when left out.
_FIELD_DEFAULTS: dict[str, Any] = {
    "category": "other",
    "targets": "all",
    "regex": None,
    "ignore_case": False,
    "keywords": [],
    "keywords_base64": [],
    "entropy": None,
    "ast": None,
    "decode": None,
    "mask_keep": 4,
}


def rule_yaml(rule: Any) -> str:
    """A rule's definition as the editor shows it: YAML of ``rule.as_dict()`` without ``id`` and ``enabled``."""
    data = {k: v for k, v in rule.as_dict().items() if k not in ("id", "enabled")}
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100))


def rule_changes(rule: Any, text: str) -> dict[str, Any]:
    """The changes that make ``rule`` what the edited YAML ``text`` says (raises ValueError on bad YAML)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleError(f"the rule is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RuleError("the rule is a YAML mapping of its fields (severity: high, regex: ..., ...)")
    changes = dict(data)
    if changes.get("id") == rule.id:
        del changes["id"]  # unchanged; a different id is refused by update_rule
    if changes.get("enabled") == rule.enabled:
        del changes["enabled"]  # the switch button changes it; update_rule refuses a different value
    for key in rule.as_dict():
        if key not in data and key in _FIELD_DEFAULTS:
            changes[key] = _FIELD_DEFAULTS[key]  # a field deleted in the editor goes back to its default
    return changes


_ANY_RULE = "hunter:rule:*"  # asking whether the user may change rules at all, before one is selected


def _toggle_action(enabled: bool) -> str:
    """The governed action of switching a rule that is ``enabled`` (off) or not (on)."""
    return "hunter.rule.disable" if enabled else "hunter.rule.enable"


@functools.lru_cache(maxsize=1)
def _labelled_corpus() -> pd.DataFrame:
    """Lines of the seeded secrets corpus, each labelled with the rule ids of the secrets planted in it."""
    from grace_core.hunter.corpus import make_corpus

    corpus = make_corpus(40_000, seed=7, every=4)
    rows, pos = [], 0
    for line in corpus.text.splitlines():
        end = pos + len(line)
        kinds = sorted({p.kind for p in corpus.planted if pos <= p.start < end})
        rows.append({"text": line, "label": kinds})
        pos = end + 1
    return pd.DataFrame(rows)


def precision_frame(ws: Any) -> pd.DataFrame:
    """Precision and recall of every enabled secret rule on the seeded corpus (rule id index)."""
    frame = _labelled_corpus()
    enabled = ws.hunter.rules(enabled=True)
    rules = [str(r) for r in enabled["id"]]
    known = set(rules)
    frame = frame.assign(label=frame["label"].map(lambda ks: [k for k in ks if k in known]))
    report = ws.hunter.evaluate(frame, target="file", rules=rules)
    scores: pd.DataFrame = report.rules[
        ["precision", "recall"]
    ]  # the stubs type a column list's frame as Any
    return scores


class HunterView(GraceView):
    """Alerts as they arrive, the rule list (admins switch rules on and off), and a scan box."""

    title = "Hunter"
    live_patterns: ClassVar[tuple[str, ...]] = ("hunter.*",)

    severities = param.ListSelector(default=list(SEVERITIES), objects=list(SEVERITIES))
    selected_rule = param.String(default="", doc="The rule the buttons and the scan box act on.")
    text = param.String(default="", doc="Text to scan.")
    target: param.Selector[str] = param.Selector(default="chat", objects=list(TARGETS))
    alert_count = param.Integer(default=0, doc="Alerts shown (after the severity filter).")
    rule_text = param.String(
        default="", doc="The selected rule's definition as YAML (admins edit and save it)."
    )

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._precision: pd.DataFrame | None = None
        self.alerts_table = pn.widgets.Tabulator(
            pd.DataFrame(columns=_ALERT_COLUMNS), disabled=True, show_index=False, pagination="local",
            page_size=12, sizing_mode="stretch_width", layout="fit_data_stretch",
            formatters={"excerpts": _WRAP, "resource": _WRAP}, hidden_columns=["id"],
        )  # fmt: skip
        self.rules_table = pn.widgets.Tabulator(
            pd.DataFrame(columns=_RULE_COLUMNS), disabled=True, show_index=False, selectable=1,
            pagination="local", page_size=12, sizing_mode="stretch_width", layout="fit_data_stretch",
            formatters={"description": _WRAP},
        )  # fmt: skip
        self.rules_table.param.watch(self._select_rule, "selection")
        self.toggle_button = pn.widgets.Button(label="Disable rule", color="warning")
        self.toggle_button.on_click(lambda _e: self.toggle_rule())
        self.precision_button = pn.widgets.Button(label="Measure precision", color="light")
        self.precision_button.on_click(self._measure_clicked)
        self.rule_editor = pn.widgets.CodeEditor.from_param(
            self.param.rule_text, language="yaml", height=300, sizing_mode="stretch_width", readonly=True
        )
        self.save_button = pn.widgets.Button(label="Save rule", color="primary")
        self.save_button.on_click(lambda _e: self.save_rule())
        self._no_rule_selected()
        self.scan_button = pn.widgets.Button(label="Scan", color="primary")
        self.scan_button.on_click(self._scan_clicked)
        self.findings = pn.widgets.Tabulator(
            pd.DataFrame(columns=["rule", "severity", "category", "excerpt"]), disabled=True, show_index=False,
            sizing_mode="stretch_width", layout="fit_data_stretch", formatters={"excerpt": _WRAP},
        )  # fmt: skip
        self.scan_result = UserHTML("")
        self.counter = pn.indicators.Number(label="alerts", value=0, font_size="28pt", title_size="10pt")
        self.refresh()

    # -- data ----------------------------------------------------------------------------------------------
    @param.depends("severities", watch=True)
    def refresh(self) -> None:
        alerts = self.ws.hunter.alerts()
        shown = alerts[alerts["severity"].isin(self.severities)] if len(alerts) else alerts
        shown = shown.reindex(columns=_ALERT_COLUMNS)
        self.alerts_table.value = frame_for_table(shown).reset_index(drop=True)
        self.alert_count = len(shown)
        self.counter.value = len(shown)
        self._refresh_rules(alerts)

    def _refresh_rules(self, alerts: pd.DataFrame | None = None) -> None:
        if alerts is None:
            alerts = self.ws.hunter.alerts()
        rules = self.ws.hunter.rules()
        hits = alerts.groupby("rule")["count"].sum() if len(alerts) else pd.Series(dtype="int64")
        rules["hits"] = rules["id"].map(hits).fillna(0).astype(int)
        if self._precision is not None:
            rules["precision"] = rules["id"].map(self._precision["precision"]).round(3)
            rules["recall"] = rules["id"].map(self._precision["recall"]).round(3)
        rules = rules.reindex(columns=_RULE_COLUMNS)
        rules["description"] = rules["description"].map(lambda d: short(d, 160))
        self.rules_table.value = rules.reset_index(drop=True)

    def rules_frame(self) -> pd.DataFrame:
        return cast(pd.DataFrame, self.rules_table.value)  # Tabulator.value is untyped

    # -- actions -------------------------------------------------------------------------------------------
    def _select_rule(self, event: Any) -> None:
        rows = event.new
        if rows:
            self.selected_rule = str(self.rules_table.value.iloc[rows[0]]["id"])

    @param.depends("selected_rule", watch=True, on_init=False)
    def _update_toggle(self) -> None:
        frame = self.rules_table.value
        row = frame[frame["id"] == self.selected_rule]
        if row.empty:
            self._no_rule_selected()
            self.rule_text = ""
            return
        self._load_rule_text()
        editable = self.may("hunter.rule.update", f"hunter:rule:{self.selected_rule}")
        self.allow(self.save_button, editable, self.cannot("edit Hunter's rules", needs="an admin"))
        self.rule_editor.readonly = not editable
        enabled = bool(row.iloc[0]["enabled"])
        self.toggle_button.label = f"{'Disable' if enabled else 'Enable'} {self.selected_rule}"
        self.toggle_button.color = "warning" if enabled else "success"
        self.allow(
            self.toggle_button,
            self.may(_toggle_action(enabled), f"hunter:rule:{self.selected_rule}"),
            self.cannot("switch Hunter's rules", needs="an admin"),
        )

    def _no_rule_selected(self) -> None:
        if not self.may(
            "hunter.rule.update", _ANY_RULE
        ):  # say the lasting reason (policy), not the passing one
            self.allow(self.toggle_button, False, self.cannot("switch Hunter's rules", needs="an admin"))
            self.allow(self.save_button, False, self.cannot("edit Hunter's rules", needs="an admin"))
        else:
            self.allow(self.toggle_button, False, "Select a rule in the list to switch it on or off.")
            self.allow(self.save_button, False, "Select a rule in the list to edit it.")
        self.rule_editor.readonly = True

    def toggle_rule(self) -> None:
        """Switch the selected rule on or off (``hunter.rule.disable`` / ``.enable``: admins in the default pack)."""
        if not self.selected_rule:
            self.message = "error: choose a rule first"
            return
        rule_id = self.selected_rule
        try:
            enabled = self.ws.hunter.rule(rule_id).enabled
        except RuleError as exc:  # a stale selection: said, the session goes on
            self.message = f"error: {exc}"
            return

        def switch() -> None:
            rule = self.ws.hunter.rule(self.selected_rule)
            if rule.enabled:
                self.ws.hunter.disable_rule(
                    rule.id, actor=self.actor, reason="switched off in the Hunter view"
                )
            else:
                self.ws.hunter.enable_rule(rule.id, actor=self.actor, reason="switched on in the Hunter view")
            self.message = f"{rule.id} is now {'off' if rule.enabled else 'on'}"
            self._refresh_rules()
            self._update_toggle()

        self.act(
            "change Hunter's rules", switch, action=_toggle_action(enabled), resource=f"hunter:rule:{rule_id}"
        )

    def _load_rule_text(self) -> None:
        self.rule_text = rule_yaml(self.ws.hunter.rule(self.selected_rule))

    def save_rule(self) -> None:
        """Save the edited YAML as the selected rule's new definition (admins only; nothing changes on error)."""
        if not self.selected_rule:
            self.message = "error: choose a rule first"
            return
        rule_id = self.selected_rule
        if not self.may("hunter.rule.update", f"hunter:rule:{rule_id}"):
            self.message = f"refused: a {self.role} cannot edit Hunter's rules"
            return

        def save() -> None:
            current = self.ws.hunter.rule(rule_id)
            changes = rule_changes(current, self.rule_text)
            if not changes:
                self.message = f"{rule_id}: nothing to save"
                return
            saved = self.ws.hunter.update_rule(rule_id, changes, actor=self.actor)
            before, after = current.as_dict(), saved.as_dict()
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            self.message = (
                f"saved {rule_id}: {', '.join(changed)} changed" if changed else f"{rule_id}: nothing changed"
            )
            self._refresh_rules()
            self._load_rule_text()  # as stored (defaults dropped, order normalised)

        self.act(f"save rule {rule_id}", save, action="hunter.rule.update", resource=f"hunter:rule:{rule_id}")

    # a click handler returns nothing: these drop the frame the public methods return
    def _measure_clicked(self, _event: object) -> None:
        self.measure_precision()

    def _scan_clicked(self, _event: object) -> None:
        self.scan()

    def measure_precision(self) -> pd.DataFrame:
        """Precision and recall of each rule on the seeded corpus, shown in the rule list."""
        self._precision = precision_frame(self.ws)
        self._refresh_rules()
        return self._precision

    def scan(self) -> pd.DataFrame:
        """Scan ``text`` as ``target`` with the enabled rules (publishes nothing); the selected rule is marked."""
        text = self.text
        if not text.strip():
            self.scan_result.object = text_html("Type some text to scan.")
            return cast(pd.DataFrame, self.findings.value)  # Tabulator.value is untyped
        try:
            findings = self.ws.hunter.scan(text, target=self.target)
        except ScanError as exc:  # over Hunter's size limit: say so, scan nothing
            self.scan_result.object = str(exc)
            return cast(pd.DataFrame, self.findings.value)  # Tabulator.value is untyped
        frame = pd.DataFrame(
            [
                {"rule": f.rule, "severity": f.severity, "category": f.category, "excerpt": f.excerpt}
                for f in sorted(findings, key=lambda f: -severity_rank(f.severity))
            ],
            columns=["rule", "severity", "category", "excerpt"],
        )
        self.findings.value = frame
        lines = [f"{len(findings)} finding(s) as {self.target}."]
        if self.selected_rule:
            report = self.ws.hunter.evaluate(
                pd.DataFrame({"text": [text], "label": [[]]}), target=self.target, rules=[self.selected_rule]
            )
            fired = bool(report.predictions["detected"].iloc[0])
            lines.append(f"Rule {self.selected_rule} {'fires' if fired else 'does not fire'} on this text.")
        self.scan_result.object = text_html(" ".join(lines))
        return frame

    # -- layout --------------------------------------------------------------------------------------------
    def __panel__(self) -> pn.viewable.Viewable:
        severity = pn.widgets.CheckButtonGroup.from_param(self.param.severities, label="Severity")
        text = pn.widgets.TextAreaInput.from_param(
            self.param.text, label="Text to test", height=120, sizing_mode="stretch_width"
        )
        target = pn.widgets.Select.from_param(self.param.target, width=120)
        alerts = pn.Column(
            pn.Row(pn.pane.Markdown("### Alerts (live)"), self.counter), severity, self.alerts_table,
            sizing_mode="stretch_width",
        )  # fmt: skip
        rules = pn.Column(
            pn.pane.Markdown("### Rules"),
            self.read_only_note(
                "switch or edit Hunter's rules",
                allowed=self.may("hunter.rule.update", _ANY_RULE),
                needs="an admin",
            ),
            pn.FlexBox(self.toggle_button, self.precision_button),
            self.rules_table,
            pn.pane.Markdown("#### Selected rule (YAML)"),
            self.rule_editor,
            self.save_button,
            sizing_mode="stretch_width",
        )
        tester = pn.Column(
            pn.pane.Markdown("### Test text"), text, pn.FlexBox(target, self.scan_button), self.scan_result,
            self.findings, sizing_mode="stretch_width",
        )  # fmt: skip
        return pn.Column(
            self._status, pn.Tabs(("Alerts", alerts), ("Rules", rules), ("Test", tester), dynamic=False),
            sizing_mode="stretch_width",
        )  # fmt: skip
