"""Memory explorer: the folder tree, an artifact with its versions, a diff between two versions, its audit trail
(from the ledger), and full-text search."""

from __future__ import annotations

from typing import Any, ClassVar

import pandas as pd
import panel as pn
import param

from .base import GraceView, frame_for_table

__all__ = ["MemoryView"]

_LIST_COLUMNS = ["folder", "name", "version", "owner", "updated_at", "path"]


def _fence(text: str, lang: str = "") -> str:
    ticks = "````" if "```" in text else "```"
    return f"{ticks}{lang}\n{text}\n{ticks}"


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
            selectable=1, sizing_mode="stretch_width", height=420, hidden_columns=["path"],
        )  # fmt: skip
        self.items.param.watch(lambda e: self._pick(self.items, e.new), "selection")
        self.results = pn.widgets.Tabulator(
            pd.DataFrame(columns=["path", "score", "snippet"]), disabled=True, show_index=False, selectable=1,
            sizing_mode="stretch_width",
        )  # fmt: skip
        self.results.param.watch(lambda e: self._pick(self.results, e.new), "selection")
        self.content = pn.pane.Markdown("Choose an artifact.", sizing_mode="stretch_width")
        self.versions = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, sizing_mode="stretch_width"
        )
        self.diff = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.audit = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, sizing_mode="stretch_width"
        )
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
            self.content.object = f"**{self.path}**: {exc}"
            return
        tags = ", ".join(artifact.tags) or "no tags"
        # Shown as source, never rendered: an artifact is written by someone else and may carry HTML.
        lang = "markdown" if artifact.content_type == "text/markdown" else "text"
        self.content.object = (
            f"### {artifact.path}\nversion {artifact.version} · {artifact.content_type} · {tags}\n\n"
            + _fence(artifact.content, lang)
        )
        versions = self.ws.memory.versions(self.path)
        self.versions.value = frame_for_table(versions)
        self.audit.value = frame_for_table(self.ws.memory.audit(self.path))
        latest = int(versions["version"].max())
        b = self.version_b or latest
        a = self.version_a or max(1, b - 1)
        if a == b:
            self.diff.object = f"Only one version ({b}): nothing to compare."
        else:
            try:
                text = self.ws.memory.diff(self.path, a, b)
            except Exception as exc:  # noqa: BLE001
                self.diff.object = f"error: {exc}"
            else:
                self.diff.object = f"Diff {a} → {b}\n\n" + _fence(text or "(no change)", "diff")

    @param.depends("query", watch=True)
    def search(self) -> pd.DataFrame:
        if not self.query.strip():
            self.results.value = pd.DataFrame(columns=["path", "score", "snippet"])
            return self.results.value
        frame = self.ws.memory.search(self.query, limit=20)
        frame = frame.reindex(columns=["path", "score", "snippet"])
        frame["score"] = frame["score"].astype(float).round(3)
        self.results.value = frame.reset_index(drop=True)
        return self.results.value

    # -- layout --------------------------------------------------------------------------------------------
    def __panel__(self) -> pn.viewable.Viewable:
        search = pn.widgets.TextInput.from_param(
            self.param.query, label="Search", placeholder="words to find"
        )
        a = pn.widgets.IntInput.from_param(self.param.version_a, label="from version", width=110)
        b = pn.widgets.IntInput.from_param(self.param.version_b, label="to version", width=110)
        left = pn.Column(search, self.results, pn.pane.Markdown("### Tree"), self.items, width=460)
        right = pn.Tabs(
            ("Artifact", pn.Column(self.content, sizing_mode="stretch_width")),
            ("Versions", pn.Column(self.versions, pn.Row(a, b), self.diff, sizing_mode="stretch_width")),
            ("Audit trail", self.audit),
            dynamic=False,
            sizing_mode="stretch_width",
        )
        return pn.Column(
            self._status, pn.Row(left, right, sizing_mode="stretch_width"), sizing_mode="stretch_width"
        )
