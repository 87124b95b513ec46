"""Audit: the ledger browser (recent events, topic filter), an event's causal lineage drawn as a graph, chain
verification with its result, the signed checkpoints, and an inclusion proof for the selected event."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import networkx as nx
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, HoverTool, Range1d
from bokeh.models.annotations.labels import LabelSet  # bokeh.models re-exports it, its stubs do not
from bokeh.plotting import figure

from .base import GraceView, frame_for_table, short, side_by_side
from .render import UserHTML, code_html, text_html

__all__ = ["AuditView", "graph_figure", "layered_layout"]

_EVENT_COLUMNS = ["seq", "ts", "topic", "actor", "resource", "summary", "id"]


def layered_layout(g: nx.DiGraph[str]) -> dict[str, tuple[float, float]]:
    """Causes left of their effects: x is the length of the longest causal chain to the node, y spreads a layer."""
    level: dict[str, int] = {}
    for node in nx.topological_sort(g):
        preds = list(g.predecessors(node))
        level[node] = 1 + max(level[p] for p in preds) if preds else 0
    layers: dict[int, list[str]] = {}
    for node in sorted(g.nodes, key=lambda n: g.nodes[n].get("seq", 0)):
        layers.setdefault(level[node], []).append(node)
    pos = {}
    for x, nodes in layers.items():
        for i, node in enumerate(nodes):
            pos[node] = (float(x), -float(i) + (len(nodes) - 1) / 2)
    return pos


def graph_figure(g: nx.DiGraph[str], selected: str | None = None) -> Any:
    """A Bokeh figure of a causal graph: one dot per event (the selected one highlighted), arrows cause → effect."""
    pos = layered_layout(g)
    nodes = list(g.nodes)
    data: dict[str, list[Any]] = {
        "x": [pos[n][0] for n in nodes],
        "y": [pos[n][1] for n in nodes],
        "label": [short(g.nodes[n].get("label", n), 34) for n in nodes],
        "topic": [g.nodes[n].get("topic", "") for n in nodes],
        "actor": [g.nodes[n].get("actor", "") for n in nodes],
        "seq": [g.nodes[n].get("seq", 0) for n in nodes],
        "color": ["#d62728" if n == selected else "#1f77b4" for n in nodes],
    }
    width = max(1, len({p[0] for p in pos.values()}))
    fig = figure(
        height=360, sizing_mode="stretch_width", tools="pan,wheel_zoom,reset,save", toolbar_location="right",
        x_range=Range1d(start=-0.5, end=width + 0.5), title=f"causal graph: {len(nodes)} events",
    )  # fmt: skip
    xs = [[pos[a][0], pos[b][0]] for a, b in g.edges]
    ys = [[pos[a][1], pos[b][1]] for a, b in g.edges]
    fig.multi_line(xs, ys, line_color="#999999", line_width=1.5)
    fig.scatter([pos[b][0] - 0.08 for _, b in g.edges], [pos[b][1] for _, b in g.edges], marker="triangle",
                angle=-1.5708, size=8, color="#999999")  # fmt: skip
    source = ColumnDataSource(data)  # type: ignore[arg-type]  # lists are valid columns; the stub's dict is invariant
    dots = fig.scatter("x", "y", size=14, color="color", source=source)
    fig.add_layout(LabelSet(x="x", y="y", text="label", source=source, x_offset=8, y_offset=4,
                            text_font_size="8pt"))  # fmt: skip
    fig.add_tools(
        HoverTool(renderers=[dots], tooltips=[("seq", "@seq"), ("topic", "@topic"), ("actor", "@actor")])
    )
    fig.axis.visible = False
    fig.grid.visible = False
    return fig


class AuditView(GraceView):
    """Read the ledger; check it. Anyone may verify; signing a checkpoint needs ``ledger.checkpoint``."""

    title = "Audit"
    live_patterns: ClassVar[tuple[str, ...]] = ("*",)

    topic = param.String(default="", doc="Glob over topics ('' for all), e.g. 'hunter.*'.")
    limit = param.Integer(default=200, bounds=(10, 5000))
    event_id = param.String(default="", doc="The selected event.")
    verified = param.Parameter(default=None, doc="The last VerifyReport.", allow_refs=False)
    proof = param.Dict(default=None, allow_None=True, doc="The inclusion proof of the selected event.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.events = pn.widgets.Tabulator(
            pd.DataFrame(columns=_EVENT_COLUMNS), disabled=True, show_index=False, selectable=1,
            pagination="local", page_size=15, sizing_mode="stretch_width", hidden_columns=["id"],
            layout="fit_data_stretch",  # one line per event (the detail below has all of it); scrolls sideways
        )  # fmt: skip
        self.events.param.watch(self._pick, "selection")
        self.verify_button = pn.widgets.Button(label="Verify chain", color="primary")
        self.verify_button.on_click(lambda _e: self.verify())
        self.checkpoint_button = pn.widgets.Button(label="Sign checkpoint", color="light")
        self.allow(self.checkpoint_button, self.may("ledger.checkpoint"), self.cannot("sign checkpoints"))
        self.checkpoint_button.on_click(lambda _e: self.make_checkpoint())
        self.verify_result = pn.pane.Alert("Not verified yet in this session.", alert_type="secondary")
        self.checkpoints = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, sizing_mode="stretch_width", layout="fit_columns",
            formatters={"event_id": {"type": "textarea"}, "root": {"type": "textarea"}},
            widths={"size": 70, "ts": 150},
        )  # fmt: skip
        self.detail = UserHTML(text_html("Select an event."))
        self.graph = pn.pane.Bokeh(sizing_mode="stretch_width", height=370)
        self.proof_pane = UserHTML("")
        self._seen_head = 0
        self.refresh()
        if not self.event_id:
            self._from_url()

    def _from_url(self) -> None:
        location = pn.state.location
        query = getattr(location, "query_params", None) if location is not None else None
        if query and query.get("event"):
            self.event_id = str(query["event"])

    # -- data ----------------------------------------------------------------------------------------------
    @param.depends("topic", "limit", watch=True)
    def refresh(self) -> None:
        head = self.ws.ledger.head[0]
        self._seen_head = head
        pattern = self.topic.strip() or None
        try:
            events = self.ws.ledger.events(since=max(0, head - 50 * self.limit), topic=pattern)
        except Exception as exc:  # noqa: BLE001 - a bad glob typed in the filter
            self.message = f"error: topic filter: {exc}"
            return
        events = events[-self.limit :][::-1]
        frame = pd.DataFrame(
            [
                {
                    "seq": e.seq, "ts": e.ts, "topic": e.topic, "actor": e.actor, "resource": e.resource or "",
                    "summary": short(e.payload_json, 90), "id": e.id,
                }
                for e in events
            ],
            columns=_EVENT_COLUMNS,
        )  # fmt: skip
        self.events.selection = []  # a kept row index would point at another event once new rows arrive
        self.events.value = frame_for_table(frame)
        self.checkpoints.value = frame_for_table(self.ws.checkpoints())

    def _pick(self, event: Any) -> None:
        if event.new:
            self.event_id = str(self.events.value.iloc[event.new[0]]["id"])

    @param.depends("event_id", watch=True)
    def _show_event(self) -> None:
        if not self.event_id:
            return
        try:
            event = self.ws.ledger.get(self.event_id)
        except Exception:  # noqa: BLE001 - a stale or mistyped link (audit?event=...)
            self.detail.object = text_html(f"No event {self.event_id} in this ledger.")
            return
        payload = json.dumps(event.payload, indent=2, ensure_ascii=False)
        # The payload holds what people wrote (messages, notes): shown as source, never rendered.
        self.detail.object = (
            f"<h3>#{event.seq} <code>{text_html(event.topic)}</code></h3>"
            + text_html(
                f"by {event.actor} at {event.ts:%Y-%m-%d %H:%M:%S} · resource {event.resource or '-'}"
                f" · parent {event.parent_id or '-'} · correlation {event.correlation_id}\nhash {event.hash.hex()}"
            )
            + code_html(payload[:4000] + ("\n… (cut)" if len(payload) > 4000 else ""), "json")
        )
        self.graph.object = graph_figure(self.ws.causal.graph(event.id), selected=event.id)
        self.prove()

    # -- actions -------------------------------------------------------------------------------------------
    def verify(self) -> Any:
        """Check the whole hash chain and every checkpoint; the result is shown in green or red."""
        report = self.ws.verify()
        self.verified = report
        if report.ok:
            witnessed = f", {report.witnessed} witnessed" if report.witnesses else ""
            self.verify_result.object = (
                f"✔ Chain verified: {report.size} events, {report.checkpoints_checked} checkpoint(s){witnessed}, "
                f"{report.seconds * 1000:.0f} ms"
            )
            self.verify_result.alert_type = "success"
        else:
            where = (
                "not verified" if report.first_bad_seq is None else f"broken at seq {report.first_bad_seq}"
            )
            self.verify_result.object = f"✘ Chain {where}: {report.reason}"
            self.verify_result.alert_type = "danger"
        return report

    def make_checkpoint(self) -> None:
        def sign() -> None:
            self.ws.checkpoint(actor=self.actor)
            self.message = "Checkpoint signed."
            self.refresh()

        self.act("sign checkpoints", sign, action="ledger.checkpoint")

    def prove(self) -> dict[str, Any] | None:
        """An inclusion proof of the selected event in the latest checkpoint covering it, checked here."""
        try:
            event = self.ws.ledger.get(self.event_id) if self.event_id else None
        except Exception:  # noqa: BLE001 - no such event: nothing to prove
            event = None
        if event is None:
            return None
        try:
            proof = self.ws.prove(event.seq)
            checkpoint = self.ws.check_proof(proof)
        except Exception as exc:  # noqa: BLE001 - e.g. no checkpoint covers this event yet
            self.proof = None
            self.proof_pane.object = text_html(f"No inclusion proof for #{event.seq}: {exc}")
            return None
        shown = self.proof = proof.as_dict()
        steps = "\n".join(f"{i + 1}. {h}" for i, h in enumerate(self.proof["path"]))
        self.proof_pane.object = (
            text_html(
                f"✔ Event #{event.seq} is leaf {proof.index} of the signed checkpoint of size {proof.size} "
                f"(root {checkpoint.root.hex()[:32]}…), checked against this ledger's public key.\n\n"
                f"Audit path ({len(self.proof['path'])} hashes):"
            )
            + code_html(steps)
            + code_html(proof.checkpoint)
        )
        return shown

    # -- layout --------------------------------------------------------------------------------------------
    def __panel__(self) -> pn.viewable.Viewable:
        topic = pn.widgets.TextInput.from_param(
            self.param.topic, label="Topic filter", placeholder="e.g. chat.*"
        )
        limit = pn.widgets.IntInput.from_param(self.param.limit, label="Rows", width=100)
        browser = pn.Column(pn.FlexBox(topic, limit), self.events, sizing_mode="stretch_width")
        event = pn.Tabs(
            ("Event", self.detail), ("Lineage", self.graph), ("Inclusion proof", self.proof_pane), dynamic=False,
            sizing_mode="stretch_width",
        )  # fmt: skip
        chain = pn.Column(
            pn.pane.Markdown("### Chain"), pn.Row(self.verify_button, self.checkpoint_button), self.verify_result,
            pn.pane.Markdown("### Checkpoints"), self.checkpoints,
        )  # fmt: skip
        return pn.Column(
            self._status,
            self.read_only_note("sign checkpoints", allowed=self.may("ledger.checkpoint")),
            side_by_side(browser, chain, min_width=400, grow=(3, 2)),
            event,
            sizing_mode="stretch_width",
        )
