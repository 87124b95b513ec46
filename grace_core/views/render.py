"""The one renderer for text that people wrote, wherever a view shows it as HTML.

Memory notes, chat messages and replies (which quote memory), alert excerpts, task details, insights, event
payloads and error messages that quote them: someone wrote them, and another person's browser shows them. A
view never hands such text to a Markdown pane, which would fetch ``![x](logout)`` as an image (signing the
reader out) or an image on another site (telling it who reads what), and let four backticks close a code fence
early. It renders the text here instead:

- ``markdown_html(text)``: Markdown as HTML (markdown-it-py, CommonMark with tables): raw HTML in the text is
  shown as text, an image becomes ``[image: alt]``, a link becomes its label followed by its address as text.
  Nothing in the text is fetched, and nothing in it is a link;
- ``text_html(text)``: the text exactly as written (escaped, line breaks kept);
- ``code_html(text)``: the text as source in a ``<pre>`` block, which nothing in the text can close;
- ``view_link(label, slug, **query)``: the one kind of link a view adds itself, to another view of this server.

Every result, and whatever a ``UserHTML`` pane is given, goes through ``sanitize`` (nh3, the Ammonia
bindings): an allow-list of tags and attributes, no ``img``, no ``style``, no event handlers, and an ``href``
only to a view of this server (``memory?path=...``). So a slip in the code that assembles a page cannot make
a reader's browser fetch anything or link anywhere else either.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import nh3
import panel as pn
import param
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

from . import VIEWS

__all__ = [
    "MAX_MARKDOWN",
    "UserHTML",
    "code_html",
    "markdown_html",
    "note_html",
    "sanitize",
    "text_html",
    "view_link",
]

MAX_MARKDOWN = 200_000  # characters rendered as Markdown; the rest is cut (a huge note would stall the page)

_TAGS = {
    "a", "b", "blockquote", "br", "code", "del", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
    "li", "ol", "p", "pre", "s", "small", "span", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
_ATTRIBUTES = {"a": {"href", "title"}, "*": {"class"}}
_CLASS = re.compile(r"^(grace-[a-z-]{1,40}|language-[\w+#.-]{1,40})$")
# A link to a view of this server: its slug, then an optional query of URL-safe characters. Relative, so it
# stays on this origin; no scheme, no host, no path segments, so it cannot reach /logout or anything else.
_VIEW_HREF = re.compile(
    r"^(?:" + "|".join(re.escape(v.slug) for v in VIEWS) + r")(?:\?[A-Za-z0-9._~%=&+\-/:@,;]*)?$"
)


def _attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "href":
        return value if _VIEW_HREF.match(value) else None
    if attribute == "class":
        kept = [c for c in value.split() if _CLASS.match(c)]
        return " ".join(kept) or None
    return value


_CLEANER = nh3.Cleaner(
    tags=_TAGS,
    clean_content_tags={"script", "style"},
    attributes=_ATTRIBUTES,
    attribute_filter=_attribute,
    url_schemes=set(),  # no absolute URL at all: only the relative view links above
    link_rel="noopener noreferrer",
)


def sanitize(markup: Any) -> str:
    """``markup`` with every tag, attribute and link outside the allow-list removed (see the module doc)."""
    return str(_CLEANER.clean("" if markup is None else str(markup)))


# -- building blocks --------------------------------------------------------------------------------------------
def text_html(text: Any) -> str:
    """Text shown exactly as written: escaped, its line breaks kept."""
    return f'<span class="grace-text">{html.escape("" if text is None else str(text))}</span>'


def code_html(text: Any, language: str = "") -> str:
    """Text shown as source: a ``<pre>`` block that no backticks or tags inside the text can close."""
    lang = f" language-{language}" if re.fullmatch(r"[\w+#.-]{1,40}", language or "") else ""
    body = html.escape("" if text is None else str(text))
    return f'<pre class="grace-code"><code class="grace-code{lang}">{body}</code></pre>'


def note_html(text: Any, kind: str = "info") -> str:
    """A one-line status note (``kind``: info, success, warning, danger), its text shown as written."""
    kind = kind if kind in ("info", "success", "warning", "danger") else "info"
    return f'<div class="grace-note grace-note-{kind}">{text_html(text)}</div>'


def view_link(label: str, slug: str, **query: str) -> str:
    """A link to another view of this server, e.g. ``view_link("note", "memory", path="/a.md")``."""
    encoded = "&".join(f"{key}={quote(str(value), safe='/:')}" for key, value in query.items())
    href = slug + (f"?{encoded}" if encoded else "")
    return f'<a href="{html.escape(href)}">{html.escape(label)}</a>'


# -- Markdown ---------------------------------------------------------------------------------------------------
class _InertLinks(RendererHTML):
    """CommonMark HTML in which images are their alt text and links are their label and address, as text."""

    def image(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        alt = self.renderInlineAsText(tokens[idx].children or [], options, env)
        return f'<span class="grace-image">[image: {html.escape(alt)}]</span>'

    def link_open(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        env.setdefault("links", []).append(str(tokens[idx].attrs.get("href", "")))
        return '<span class="grace-link">'

    def link_close(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        href = env["links"].pop() if env.get("links") else ""
        label = tokens[idx - 1].content if idx and tokens[idx - 1].type == "text" else None
        shown = "" if not href or label == href else f' <span class="grace-url">({html.escape(href)})</span>'
        return "</span>" + shown


_MARKDOWN = MarkdownIt("commonmark", {"html": False, "breaks": True}, renderer_cls=_InertLinks).enable(
    ["table", "strikethrough"]
)


def markdown_html(text: Any) -> str:
    """Markdown someone wrote, as safe HTML: formatting kept, nothing fetched, nothing linked."""
    source = "" if text is None else str(text)
    cut = len(source) > MAX_MARKDOWN
    rendered = _MARKDOWN.render(source[:MAX_MARKDOWN], {})
    if cut:
        rendered += f'<p class="grace-muted">(cut after {MAX_MARKDOWN:,} characters)</p>'
    return f'<div class="grace-markdown">{sanitize(rendered)}</div>'


# -- the pane ---------------------------------------------------------------------------------------------------
_CSS = """
:host { font-size: 0.95rem; }
.grace-text { white-space: pre-wrap; overflow-wrap: anywhere; }
.grace-markdown { overflow-wrap: anywhere; }
pre.grace-code, .grace-markdown pre { background: #f4f7f7; padding: .5rem .6rem; border-radius: 4px;
  white-space: pre-wrap; overflow-wrap: anywhere; max-height: 32rem; overflow: auto; margin: .3rem 0; }
.grace-url, .grace-image, .grace-muted { color: #5f6b6b; }
.grace-link { text-decoration: underline dotted; }
.grace-ok { color: #1b7f3b; font-weight: 600; } .grace-failed { color: #b00020; font-weight: 600; }
.grace-note { padding: .55rem .8rem; border-radius: 6px; margin: .2rem 0; border: 1px solid transparent; }
.grace-note-info { background: #e8f3f3; border-color: #bcdcdc; color: #0b4f4f; }
.grace-note-success { background: #e6f4ea; border-color: #b7dfc2; color: #1b5e20; }
.grace-note-warning { background: #fff6e0; border-color: #f1d8a0; color: #6b4a00; }
.grace-note-danger { background: #fdecee; border-color: #f3b9c0; color: #8a1120; }
.grace-msg { padding: .5rem .75rem; margin: .35rem 0; border-radius: 8px; background: #f3f6f6; }
.grace-msg-reply { background: #e8f3f3; } .grace-msg-refused, .grace-msg-failed { background: #fdf1e6; }
.grace-who { font-weight: 600; font-size: .85rem; color: #3d4d4d; margin-bottom: .2rem; }
.grace-msg p { margin: .3rem 0; }
table { border-collapse: collapse; } th, td { border: 1px solid #d5dede; padding: .2rem .45rem; }
"""


class UserHTML(pn.pane.HTML):
    """An HTML pane for content built from what people wrote: it sanitizes whatever it is given (``sanitize``)."""

    sanitize_html = param.Boolean(default=True, constant=True, doc="Always on: see grace_core.views.render.")
    sanitize_hook = param.Callable(default=sanitize, constant=True)

    def __init__(self, object: Any = None, **params: Any) -> None:
        params.setdefault("sizing_mode", "stretch_width")
        params["stylesheets"] = [_CSS, *params.get("stylesheets", [])]
        super().__init__(object, **params)  # type: ignore[no-untyped-call]  # Panel has no annotations
