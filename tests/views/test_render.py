"""The one renderer of what people wrote: nothing in the text is fetched, linked, run or able to break out."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from grace_core.views.render import (
    UserHTML,
    code_html,
    markdown_html,
    note_html,
    sanitize,
    text_html,
    view_link,
)

# What a hostile note holds: an image that signs the reader out, one that tells another site who reads what, a
# link there, four backticks that close a three-backtick fence early, and raw HTML with a handler.
HOSTILE = (
    "Standup moved. ![x](logout) ![p](http://beacon.invalid/p.png) [docs](http://beacon.invalid/)\n\n"
    "````\n```\n![y](logout)\n````\n\n<img src=http://beacon.invalid/i.png onerror=alert(1)>\n"
    '<a href="/logout">out</a> <script>fetch("//beacon.invalid")</script>'
)


_ACTIVE_TAGS = {"img", "script", "iframe", "object", "embed", "link", "style", "form", "input", "video", "audio",
                "source", "svg", "math", "base", "meta"}  # fmt: skip


class _Active(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _ACTIVE_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name in ("src", "srcset", "style", "action", "formaction", "background") or name.startswith(
                "on"
            ):
                self.found.append(f"{tag} {name}={value}")
            if name == "href" and not re.match(r"^(memory|audit)\?[^\s\\]*$", value or ""):
                self.found.append(f"{tag} href={value}")


def fetches_or_links(markup: str) -> list[str]:
    """Every tag or attribute in ``markup`` that makes a browser fetch, navigate or run something (other
    than a link to a view of this server)."""
    parser = _Active()
    parser.feed(markup)
    parser.close()
    return parser.found


def test_markdown_keeps_formatting_but_fetches_and_links_nothing():
    out = markdown_html(HOSTILE)
    assert fetches_or_links(out) == []
    assert "<p>" in out
    assert "[image: x]" in out  # an image is its alt text
    assert "docs" in out
    assert "(http://beacon.invalid/)" in out  # a link is its label and its address, as text
    assert "&lt;img src=http://beacon.invalid/i.png" in out  # raw HTML is shown, not parsed


def test_code_blocks_cannot_be_closed_from_inside():
    shown = code_html("````\n</code></pre><img src=x>\n![x](logout)")
    assert shown.count("<pre") == 1
    assert shown.endswith("</code></pre>")
    assert fetches_or_links(shown) == []
    assert "![x](logout)" in shown  # the source, as written


def test_text_is_shown_exactly_as_written():
    assert (
        text_html("a <b> & ![x](logout)") == '<span class="grace-text">a &lt;b&gt; &amp; ![x](logout)</span>'
    )
    assert fetches_or_links(note_html("<img src=x>", "danger")) == []


def test_only_links_to_views_of_this_server_survive_sanitizing():
    kept = sanitize(view_link("the note", "memory", path="/notes/a b.md"))
    assert 'href="memory?path=/notes/a%20b.md"' in kept
    for href in ("/logout", "logout", "//beacon.invalid", "https://beacon.invalid/", "javascript:alert(1)",
                 "memory/../logout", "chat?x=1 onmouseover=alert(1)", "data:text/html,x"):  # fmt: skip
        assert "href" not in sanitize(f'<a href="{href}">x</a>'), href
    assert sanitize('<span class="grace-text evil" style="background:url(//x)">s</span>') == (
        '<span class="grace-text">s</span>'
    )


def test_the_pane_sanitizes_whatever_it_is_given():
    pane = UserHTML("<p>hi</p><img src=logout>")
    pane.object = '<a href="/logout">x</a><img src="http://beacon.invalid/p.png">'
    sent = pane._transform_object(pane.object)["object"]  # what goes to the browser (HTML-escaped once)
    assert "img" not in sent
    assert "logout" not in sent


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("![]()<>`'\"=/: \nxaimgsrc:hrefjavascript&#;.lo")), max_size=120)
)
def test_no_text_makes_the_markdown_fetch_or_link(text):
    assert fetches_or_links(markdown_html(text)) == []
    assert fetches_or_links(code_html(text)) == []
    assert fetches_or_links(text_html(text)) == []


# -- every view ------------------------------------------------------------------------------------------------
def sent_to_browser(layout) -> str:
    """The HTML that every markup pane (HTML, Markdown, alerts, chat messages) of a layout sends to a browser."""
    from panel.pane.markup import HTMLBasePane

    return "\n".join(
        html.unescape(pane._transform_object(pane.object)["object"])
        for pane in layout.select(HTMLBasePane)
        if pane.visible
    )


def test_what_people_wrote_reaches_no_view_as_live_markup(vws):
    from grace_core.views import view_class

    vws.memory.write("/notes/standup.md", HOSTILE, actor="bob", reason=HOSTILE[:60])
    note_event = vws.memory.versions("/notes/standup.md")["event_id"].iloc[0]
    vws.memory.write("/notes/standup.md", HOSTILE + "\nmore", actor="bob")
    task = vws.tasks.create("Read ![x](logout)", kind="review", actor="bob", details={"note": HOSTILE})
    vws.tasks.transition(task.id, "running", actor="executor", attempt=1)
    vws.tasks.transition(task.id, "failed", actor="executor", attempt=1, error=HOSTILE)
    views = {
        "memory": {"path": "/notes/standup.md", "query": "standup"},
        "audit": {"event_id": note_event},
        "tasks": {"selected_task": task.id},
        "chat": {},
        "dashboard": {},
        "hunter": {"text": HOSTILE},
        "ide": {},
    }
    for slug, state in views.items():
        view = view_class(slug)(ws=vws, user="vic", role="viewer")
        view.param.update(**state)
        if slug == "chat":
            view.send("When is the standup?")  # the reply quotes the note
        if slug == "hunter":
            view.scan()
        view.message = f"error: could not open {HOSTILE}"  # a message quoting what someone wrote
        shown = sent_to_browser(view.__panel__())
        assert "Standup moved" in shown or slug in ("dashboard", "hunter", "ide"), slug
        assert fetches_or_links(shown) == [], slug
        view.close()
