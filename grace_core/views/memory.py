"""Memory explorer: the folder tree, an artifact with its versions, a diff between two versions, its audit trail
(from the ledger), and full-text search."""

from __future__ import annotations

from typing import Any, ClassVar, cast

import pandas as pd
import panel as pn
import param

from .base import GraceView, frame_for_table, side_by_side
from .render import UserHTML, code_html, text_html

__all__ = ["MemoryView"]

_LIST_COLUMNS = ["folder", "name", "version", "owner", "updated_at", "path"]
_RESULT_COLUMNS = ["path", "score", "snippet"]
# Long cells wrap instead of being cut off (Tabulator's textarea formatter escapes the text).
_WRAP = {"type": "textarea"}


class MemoryView(GraceView):
    """Browse and search the workspace's memory; everything shown is read, nothing is written here."""

    title = "Memory"
    live_patterns: ClassVar[tuple[str, ...]] = ("memory.item.*",)

    path = param.String(default="", doc="The artifact shown.")
    version_a = param.Integer(
        default=0, bounds=(0, None), doc="Diff from this version (0: the one before b)."
    )
    version_b = param.Integer(default=0, bounds=(0, None), doc="Diff to this version (0: the latest).")
    query = param.String(default="", doc="Full-text search.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.items = pn.widgets.Tabulator(
            pd.DataFrame(columns=_LIST_COLUMNS), groupby=["folder"], disabled=True, show_index=False,
            selectable=1, sizing_mode="stretch_width", height=420, hidden_columns=["path", "folder"],
            layout="fit_columns", formatters={"name": _WRAP}, widths={"name": "40%", "version": 100, "owner": 90},
        )  # fmt: skip
        self.items.param.watch(lambda e: self._pick(self.items, e.new), "selection")
        self.results = pn.widgets.Tabulator(
            pd.DataFrame(columns=_RESULT_COLUMNS), disabled=True, show_index=False, selectable=1,
            sizing_mode="stretch_width", layout="fit_columns", formatters={"path": _WRAP, "snippet": _WRAP},
            widths={"path": "30%", "score": 90}, visible=False,
        )  # fmt: skip
        self.results.param.watch(lambda e: self._pick(self.results, e.new), "selection")
        self.results_note = UserHTML("")
        self.content = UserHTML(text_html("Choose an artifact in the tree, or search."))
        self.versions = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, sizing_mode="stretch_width", layout="fit_columns",
            formatters={"reason": _WRAP},
        )  # fmt: skip
        self.diff = UserHTML("")
        self.audit = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, sizing_mode="stretch_width", layout="fit_columns",
            formatters={"reason": _WRAP, "path": _WRAP},
        )  # fmt: skip
        self._shown = ""  # the artifact whose versions the diff inputs were set for
        self.refresh()
        if not self.path:
            self._from_url()

    def _from_url(self) -> None:
        # Chat citations link here as memory?path=/some/artifact
        location = pn.state.location
        query = getattr(location, "query_params", None) if location is not None else None
        if query and query.get("path"):
            self.path = str(query["path"])

    # -- data ----------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        frame = self.ws.memory.list("/")
        frame = frame.assign(
            folder=frame["path"].map(lambda p: p.rsplit("/", 1)[0] or "/"),
            name=frame["path"].map(lambda p: p.rsplit("/", 1)[1]),
        ).sort_values("path")
        self.items.value = frame_for_table(frame.reindex(columns=_LIST_COLUMNS)).reset_index(drop=True)
        if self.path:
            self._show()

    def tree(self) -> pd.DataFrame:
        return self.ws.memory.tree("/")

    def _pick(self, table: pn.widgets.Tabulator, rows: list[int]) -> None:
        if rows:
            self.path = str(table.value.iloc[rows[0]]["path"])

    @param.depends("path", "version_a", "version_b", watch=True)
    def _show(self) -> None:
        if not self.path:
            return
        try:
            artifact = self.ws.memory.read(self.path)
        except Exception as exc:  # noqa: BLE001 - a stale link or a deleted artifact: say so
            self.content.object = text_html(f"{self.path}: {exc}")
            return
        tags = ", ".join(artifact.tags) or "no tags"
        # Shown as source, never rendered: an artifact is written by someone else and may carry anything.
        lang = "markdown" if artifact.content_type == "text/markdown" else "text"
        self.content.object = (
            f"<h3>{text_html(artifact.path)}</h3>"
            + text_html(f"version {artifact.version} · {artifact.content_type} · {tags}")
            + code_html(artifact.content, lang)
        )
        versions = self.ws.memory.versions(self.path)
        self.versions.value = frame_for_table(versions)
        self.audit.value = frame_for_table(self.ws.memory.audit(self.path))
        latest = int(versions["version"].max())
        if self._shown != self.path:
            # A new artifact: the inputs show the versions compared (its latest and the one before), not 0/0.
            self._shown = self.path
            wanted = {"version_a": max(1, latest - 1), "version_b": latest}
            if (self.version_a, self.version_b) != (wanted["version_a"], wanted["version_b"]):
                self.param.update(**wanted)  # which shows the diff through this same method
                return
        b = min(self.version_b or latest, latest)
        a = min(self.version_a or max(1, b - 1), latest)
        if a == b:
            self.diff.object = text_html(f"Only one version ({b}): nothing to compare.")
        else:
            try:
                text = self.ws.memory.diff(self.path, a, b)
            except Exception as exc:  # noqa: BLE001
                self.diff.object = text_html(f"error: {exc}")
            else:
                self.diff.object = text_html(f"Diff {a} → {b}") + code_html(text or "(no change)", "diff")

    @param.depends("query", watch=True)
    def search(self) -> pd.DataFrame:
        """The best matches of ``query``: path, BM25 score and a snippet of the text around the words."""
        query = self.query.strip()
        if not query:
            self.results.value = pd.DataFrame(columns=_RESULT_COLUMNS)
            self.results.visible = False
            self.results_note.object = ""
            return cast(pd.DataFrame, self.results.value)  # Tabulator.value is untyped
        try:
            frame = self.ws.memory.search(query, limit=20, actor=self.actor)
        except Exception as exc:  # noqa: BLE001 - refused or bad input: said on the page, the view goes on
            self.message = f"error: search: {exc}"
            return cast(pd.DataFrame, self.results.value)  # Tabulator.value is untyped
        frame = frame.reindex(columns=_RESULT_COLUMNS)
        frame["score"] = frame["score"].astype(float).round(3)
        self.results.value = frame.reset_index(drop=True)
        self.results.visible = not frame.empty
        found = f"{len(frame)} match(es)" if len(frame) else "No match"
        self.results_note.object = text_html(f"{found} for “{query}”, best first; choose one to open it.")
        return cast(pd.DataFrame, self.results.value)  # Tabulator.value is untyped

    # -- layout --------------------------------------------------------------------------------------------
    def __panel__(self) -> pn.viewable.Viewable:
        search = pn.widgets.TextInput.from_param(
            self.param.query, label="Search", placeholder="words to find", sizing_mode="stretch_width"
        )
        a = pn.widgets.IntInput.from_param(self.param.version_a, label="from version", width=110)
        b = pn.widgets.IntInput.from_param(self.param.version_b, label="to version", width=110)
        left = pn.Column(
            search, self.results_note, self.results, pn.pane.Markdown("### Tree"), self.items,
            sizing_mode="stretch_width",
        )  # fmt: skip
        right = pn.Tabs(
            ("Artifact", pn.Column(self.content, sizing_mode="stretch_width")),
            ("Versions", pn.Column(self.versions, pn.Row(a, b), self.diff, sizing_mode="stretch_width")),
            ("Audit trail", self.audit),
            dynamic=False,
            sizing_mode="stretch_width",
        )
        return pn.Column(self._status, side_by_side(left, right, min_width=420), sizing_mode="stretch_width")
