"""The scanner: every rule of a set, compiled once (on RE2, see ``regex.py``), run over bounded windows.

A text of up to ``MAX_TEXT`` characters is scanned (a longer one is refused with a ``ScanError`` wherever it
enters: chat, memory, tasks, sandbox code, the Hunter view, ``grace hunter scan``). Regex rules see it in windows
of ``WINDOW`` characters that overlap the next by ``OVERLAP`` (and the previous by ``MARGIN``, for leading
context), so a finding across a window edge is still found, once, by the window it starts in; a single regex
finding is at most ``OVERLAP`` characters long. In each window one pass of an Aho-Corasick automaton
(pyahocorasick) over the lower-cased text finds which rules' keywords occur; only those rules (and the rules
without keywords) then run. Rules with ``ignore_case`` run over the lower-cased text. Python AST checks run on
the whole text for the code target when it parses as Python; when it does not (a shell script, a snippet), the
rule's regex is the fallback.

Every occurrence is a finding, with its offsets, line and column. Excerpts are masked: the sensitive part of
a match (its ``secret`` group, or the whole match) keeps a short prefix (``AKIA****``), and an excerpt that
would still fire any rule is masked further, so excerpts can be stored and shown without re-triggering.
"""

from __future__ import annotations

import ast
import base64
import binascii
import bisect
import functools
import itertools
import math
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import ahocorasick

from grace_core.errors import RuleError, ScanError

from .checks import CHECKS, AstCheck
from .regex import Regex, Text, compile_regex
from .rules import TARGETS, Rule

__all__ = [
    "MASK",
    "MAX_TEXT",
    "OVERLAP",
    "WINDOW",
    "Finding",
    "Scanner",
    "check_examples",
    "redact",
    "scanner_for",
    "shannon_entropy",
]

MASK = "****"
MAX_EXCERPT = 160
MAX_TEXT = 4_000_000  # characters one scan accepts (the sandbox takes 256 K of code, chat 20 K per message)
WINDOW = 65_536  # characters a regex window owns: findings that start in it
OVERLAP = 16_384  # characters a window reads past its end, so a finding that starts in it is whole
MARGIN = 256  # characters a window reads before its start: the leading context of its first findings
MAX_AST_SOURCE = MAX_TEXT  # code of this size still parses in about a second
_NEWLINES = re.compile(r"\r\n|\r|\n")
_second = operator.itemgetter(1)
_C_LOG_C = [0.0, *(c * math.log2(c) for c in range(1, 4096))]


@dataclass(frozen=True)
class Finding:
    """One occurrence of one rule in one text. ``line`` and ``column`` start at 1; ``end`` is exclusive."""

    rule: str
    severity: str
    category: str
    target: str
    start: int
    end: int
    line: int
    column: int
    excerpt: str
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = {
            "rule": self.rule,
            "severity": self.severity,
            "category": self.category,
            "target": self.target,
            "line": self.line,
            "column": self.column,
            "start": self.start,
            "end": self.end,
            "excerpt": self.excerpt,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


def shannon_entropy(text: str) -> float:
    """Shannon entropy in bits per character (0 for the empty string)."""
    n = len(text)
    if n == 0:
        return 0.0
    if n >= len(_C_LOG_C):
        return -sum(c / n * math.log2(c / n) for c in map(text.count, set(text)))
    # H = log2(n) - sum(c * log2(c)) / n over the character counts c: counted by str.count per distinct
    # character and summed from a table, all in C (secrets are short; this runs once per candidate match).
    return max(0.0, math.log2(n) - math.fsum(map(_C_LOG_C.__getitem__, map(text.count, set(text)))) / n)


class _Compiled:
    """A rule ready to run: its regex as literal-first alternatives (for the original or the lower-cased
    text), the literal each alternative starts with, and its AST check."""

    __slots__ = (
        "allow", "check", "fallbacks", "gates", "index", "keep", "on_lower", "patterns", "rule", "same", "targets",
    )  # fmt: skip

    def __init__(self, rule: Rule, index: int) -> None:
        self.rule = rule
        self.index = index
        self.targets = frozenset(rule.targets)
        self.check: AstCheck | None = CHECKS[rule.ast] if rule.ast else None
        self.same = rule.same
        self.allow = [compile_regex(p, rule=rule.id) for p in rule.allow]
        regex = rule.regex
        self.on_lower = rule.ignore_case or regex is None
        if regex is None and rule.keywords and rule.ast is None:
            # A keyword-only rule: every occurrence of a keyword is a finding.
            words = sorted({k.lower() for k in rule.keywords}, key=len, reverse=True)
            regex = "|".join(re.escape(w) for w in words)
        pieces = alternatives(regex) if regex is not None else []
        self.patterns = [compile_regex(p, rule=rule.id) for p in pieces]
        # The lower-cased text can be longer than the text (a few Unicode letters lower to two characters);
        # then offsets would not line up, and these rules run case-insensitively over the original instead.
        self.fallbacks = (
            [compile_regex(p, rule=rule.id, ignore_case=True) for p in pieces] if self.on_lower else []
        )
        # An alternative that starts with a literal can only match where that literal occurs: the keyword
        # pass looks for it too, and the alternative runs only when it was seen ("" = always runs).
        self.gates = [_literal_prefix(p).lower() if len(_split_top(p) or "xx") == 1 else "" for p in pieces]
        self.gates = [g if len(g) >= 3 else "" for g in self.gates]
        self.keep = rule.mask_keep


@dataclass(frozen=True)
class _Hit:
    index: int  # of the compiled rule
    start: int
    end: int
    s_start: int  # the sensitive span (masked in excerpts)
    s_end: int
    detail: str = ""


class Scanner:
    """A compiled set of rules. ``scan(text, target=...)`` is pure and thread-safe."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        ids = [r.id for r in self.rules]
        if len(ids) != len(set(ids)):
            raise RuleError("a scanner needs distinct rule ids")
        self._compiled = [_Compiled(r, i) for i, r in enumerate(self.rules)]
        self._always: list[int] = []
        words: dict[str, int] = {}  # every keyword and alternative prefix -> its number in the automaton
        word_rules: list[list[int]] = []
        for c in self._compiled:
            keywords = c.rule.all_keywords
            if not keywords:
                self._always.append(c.index)
            for w in [*keywords, *c.gates]:
                if w and w not in words:
                    words[w] = len(words)
                    word_rules.append([])
            for w in keywords:
                word_rules[words[w]].append(c.index)
        self._word_rules = [tuple(r) for r in word_rules]
        # Per rule: for each alternative, the automaton number of its literal prefix (-1: always runs).
        self._gates = [[words[g] if g else -1 for g in c.gates] for c in self._compiled]
        # Two automata: words with non-ASCII letters cannot occur in ASCII text (most code and configuration),
        # and every extra first letter makes each step of the automaton dearer.
        self._ascii = _automaton({w: n for w, n in words.items() if w.isascii()})
        self._unicode = _automaton({w: n for w, n in words.items() if not w.isascii()})
        self._decoded_rules = frozenset(
            c.index for c in self._compiled if c.rule.category == "injection" and c.rule.decode is None
        )

    def __repr__(self) -> str:
        return f"<Scanner {len(self.rules)} rules>"

    # -- scanning ----------------------------------------------------------------------------------------------
    def scan(self, text: str, *, target: str) -> list[Finding]:
        """Every finding of every applicable rule in ``text``, in text order, with masked excerpts."""
        if target not in TARGETS:
            raise ScanError(f"unknown scan target {target!r}; one of {', '.join(TARGETS)}")
        if not isinstance(text, str):
            raise ScanError(f"Hunter scans text (str), not {type(text).__name__}")
        check_size(text)
        hits = self._hits(text, target, None)
        if not hits:
            return []
        hits.sort(key=lambda h: (h.start, h.end, h.index))
        excerpts = self._excerpts(text, hits)
        findings = []
        line, last = 1, 0
        for hit, excerpt in zip(hits, excerpts, strict=True):
            # Lines are counted incrementally between consecutive findings: C-speed counts, no line loop.
            line += text.count("\n", last, hit.start)
            last = hit.start
            column = hit.start - (text.rfind("\n", 0, hit.start) + 1) + 1
            rule = self._compiled[hit.index].rule
            findings.append(
                Finding(
                    rule.id,
                    rule.severity,
                    rule.category,
                    target,
                    hit.start,
                    hit.end,
                    line,
                    column,
                    excerpt,
                    hit.detail,
                )
            )
        return findings

    def fires(self, text: str, *, target: str | None = None) -> set[str]:
        """The ids of the rules that fire on ``text`` (for ``target``, or as any target when None)."""
        check_size(text)
        return {self._compiled[h.index].rule.id for h in self._hits(text, target, None)}

    def _active(
        self, lowered: str, target: str | None, only: frozenset[int] | None
    ) -> tuple[list[int], set[int]]:
        """The rules to run (their keywords occur, or they have none) and the automaton words seen."""
        seen: set[int] = set()
        chosen = set(self._always)
        automata = [self._ascii] if lowered.isascii() else [self._ascii, self._unicode]
        for automaton in automata:
            if automaton is not None:
                seen.update(map(_second, automaton.iter(lowered)))
        if seen:
            rules = self._word_rules
            for n in seen:
                chosen.update(rules[n])
        compiled = self._compiled
        active = sorted(
            i
            for i in chosen
            if (target is None or target in compiled[i].targets) and (only is None or i in only)
        )
        return active, seen

    def _hits(
        self, text: str, target: str | None, only: frozenset[int] | None, *, depth: int = 0
    ) -> list[_Hit]:
        if not text:
            return []
        hits: list[_Hit] = []
        parsed, tree = False, None  # the whole text is parsed once, by the first AST rule that needs it
        by_ast: set[int] = set()  # rules the AST decided (for the whole text)
        last_end: dict[int, int] = {}  # per rule: where its last finding ended (overlaps are one finding)
        for lo, start, stop, hi in _windows(len(text)):
            chunk = text if (lo, hi) == (0, len(text)) else text[lo:hi]
            lowered = chunk.lower()
            aligned = len(lowered) == len(chunk)
            active, seen = self._active(lowered, target, only)
            sources: dict[bool, Text] = {}  # the window's UTF-8 bytes, original and lower-cased
            for i in active:
                c = self._compiled[i]
                if c.check is not None and target == "code":
                    if not parsed:
                        parsed, tree = True, _parse(text)
                    if tree is not None:
                        if i not in by_ast:
                            by_ast.add(i)
                            hits.extend(self._ast_hits(c, text, tree))
                        continue
                if not c.patterns:
                    continue
                lower = c.on_lower and aligned
                patterns = c.patterns if lower or not c.on_lower else c.fallbacks
                patterns = [p for p, g in zip(patterns, self._gates[i], strict=True) if g < 0 or g in seen]
                if not patterns:
                    continue
                if lower not in sources:
                    sources[lower] = Text.of(lowered if lower else chunk)
                for f_start, f_end, m, buf in _matches(patterns, sources[lower], c.same):
                    start_at, end_at = buf.char(f_start) + lo, buf.char(f_end) + lo
                    if not start <= start_at < stop or start_at < last_end.get(i, -1):
                        continue  # another window's finding, or overlaps an earlier match of this rule
                    hit = self._accept(c, chunk, lo, buf, m, start_at, end_at, target, depth)
                    if hit is not None:
                        last_end[i] = end_at
                        hits.append(hit)
        return hits

    def _accept(
        self,
        c: _Compiled,
        chunk: str,
        lo: int,
        buf: Text,
        m: Any,
        start: int,
        end: int,
        target: str | None,
        depth: int,
    ) -> _Hit | None:
        """The finding of one match, or None when its secret is too regular or what it decodes fires nothing."""
        rule = c.rule
        s_start, s_end = start, end
        group = m.re.groupindex.get("secret")
        if group is not None and m.start(group) >= 0:  # an optional secret group may not take part
            s_start, s_end = buf.char(m.start(group)) + lo, buf.char(m.end(group)) + lo
        secret = chunk[s_start - lo : s_end - lo]
        if rule.entropy is not None and shannon_entropy(secret) < rule.entropy:
            return None
        if c.allow and any(p.search(secret.encode("utf-8", "surrogatepass")) for p in c.allow):
            return None  # a value the rule says is not worth an alert (a test-mode key, a placeholder)
        detail = ""
        if rule.decode is not None:
            if depth > 0:
                return None
            decoded = _decode(secret)
            if decoded is None:
                return None
            inner = self._hits(decoded, target, self._decoded_rules, depth=depth + 1)
            if not inner:
                return None
            fired = sorted({self._compiled[h.index].rule.id for h in inner})
            detail = "decodes to text that fires " + ", ".join(fired)
        return _Hit(c.index, start, end, s_start, s_end, detail)

    @staticmethod
    def _ast_hits(c: _Compiled, text: str, tree: ast.Module) -> list[_Hit]:
        assert c.check is not None
        lines = _Lines(text)
        out = []
        for node in c.check(tree):
            start = lines.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
            end_line = getattr(node, "end_lineno", None) or node.lineno  # type: ignore[attr-defined]
            end_col = getattr(node, "end_col_offset", None)
            end = lines.offset(end_line, end_col) if end_col is not None else start + 1
            out.append(_Hit(c.index, start, max(end, start + 1), start, max(end, start + 1)))
        return out

    # -- excerpts ----------------------------------------------------------------------------------------------
    def _excerpts(self, text: str, hits: Sequence[_Hit]) -> list[str]:
        spans = _Spans(
            sorted({(h.s_start, h.s_end, self._keep(h)) for h in hits}, key=lambda s: (s[0], -s[1]))
        )
        out = [spans.masked(text, h.start, h.end) for h in hits]
        if not self._hits("\n".join(out), None, None):
            return out
        # Some excerpt still fires a rule: mask those harder (no prefix), and to the bare mask if need be.
        bare = _Spans([(s, e, 0) for s, e, _ in spans.spans])
        safe = []
        for h, excerpt in zip(hits, out, strict=True):
            if self._hits(excerpt, None, None):
                excerpt = bare.masked(text, h.start, h.end)
                if self._hits(excerpt, None, None):
                    excerpt = MASK
            safe.append(excerpt)
        return safe

    def _keep(self, hit: _Hit) -> int:
        c = self._compiled[hit.index]
        size = hit.s_end - hit.s_start
        # A short secret shows at most a quarter of itself; other matches at most half.
        return max(0, min(c.keep, size // 4 if c.rule.category == "secret" else size // 2))


class _Spans:
    """The sensitive spans of one scan (sorted by start), each with how many characters it may show."""

    def __init__(self, spans: list[tuple[int, int, int]]) -> None:
        self.spans = spans
        self.starts = [s for s, _, _ in spans]
        self.reach = list(itertools.accumulate((e for _, e, _ in spans), max))  # furthest end so far

    def masked(self, text: str, start: int, end: int) -> str:
        """``text[start:end]`` with every sensitive span that overlaps it cut to its prefix plus the mask."""
        i = bisect.bisect_left(self.starts, start)
        while i > 0 and self.reach[i - 1] > start:  # earlier spans that reach into the window
            i -= 1
        pieces = []
        pos = start
        for s, e, keep in itertools.islice(self.spans, i, None):
            if s >= end:
                break
            if e <= pos:
                continue
            if s >= pos:
                pieces.append(text[pos:s])
                pieces.append(text[s : s + keep] + MASK)
            else:
                pieces.append(MASK)  # the span began before this point: show none of it
            pos = min(e, end)
        if pos < end:
            pieces.append(text[pos:end])
        excerpt = " ".join("".join(pieces).split())
        return excerpt if len(excerpt) <= MAX_EXCERPT else excerpt[: MAX_EXCERPT - 1] + "…"


_META = frozenset(".^$*+?{}[]|()")


def _literal_prefix(piece: str) -> str:
    """The literal text every match of ``piece`` starts with ("" when it starts with a class or a group)."""
    i = 0
    while piece.startswith("(?P<", i) and ">" in piece[i:]:
        i = piece.index(">", i) + 1  # a named group opening: its content still starts the match
    out = []
    while i < len(piece):
        ch = piece[i]
        if ch == "\\":
            nxt = piece[i + 1 : i + 2]
            if not nxt or nxt.isalnum():
                break  # \s, \d, \b...: not a literal
            literal, step = nxt, 2
        elif ch in _META:
            break
        else:
            literal, step = ch, 1
        after = piece[i + step : i + step + 1]
        if after and after in "?*{":
            break  # this character is optional or counted
        out.append(literal)
        i += step
        if after == "+":
            break
    return "".join(out)


def _automaton(words: dict[str, int]) -> Any:
    if not words:
        return None
    automaton = ahocorasick.Automaton()
    for word, n in words.items():
        automaton.add_word(word, n)
    automaton.make_automaton()
    return automaton


def check_size(text: str) -> None:
    """Refuse a text longer than ``MAX_TEXT`` (a ``ScanError`` saying so, before anything is scanned)."""
    if len(text) > MAX_TEXT:
        raise ScanError(
            f"the text has {len(text):,} characters; Hunter scans at most {MAX_TEXT:,} at a time (split it)"
        )


def _windows(n: int) -> Iterator[tuple[int, int, int, int]]:
    """Per window ``(lo, start, stop, hi)``: it reads ``[lo, hi)``, owns findings starting in ``[start, stop)``."""
    if n <= WINDOW + OVERLAP:
        yield 0, 0, n, n
        return
    start = 0
    while start < n:
        stop = min(start + WINDOW, n)
        if n - stop <= OVERLAP:
            stop = n  # the last window takes the rest
        yield max(0, start - MARGIN), start, stop, min(n, stop + OVERLAP)
        start = stop


def _finds(
    regex: Regex, buf: Text, same: tuple[tuple[str, ...], ...]
) -> Iterator[tuple[int, int, Any, Text]]:
    """Every finding of one pattern in byte offsets: the ``match`` group (or the whole match) and the match.

    The next search starts where the finding ends, so trailing context is free for the next finding. A match
    whose ``same`` groups differ is no finding; the search goes on one character after where it started.
    """
    data = buf.data
    group = regex.groupindex.get("match")
    pos, size = 0, len(data)
    while pos <= size:
        m = regex.search(data, pos)
        if m is None:
            return
        if same and not all(len({m.group(g) for g in names}) == 1 for names in same):
            pos = _next_char(data, m.start())
            continue
        f_start, f_end = m.span(group) if group is not None else m.span()
        if f_start < 0:  # an optional match group that did not take part: the whole match is the finding
            f_start, f_end = m.span()
        yield f_start, f_end, m, buf
        pos = f_end if f_end > pos else _next_char(data, max(pos, m.end() - 1))


def _next_char(data: bytes, pos: int) -> int:
    """The byte offset of the character after the one at ``pos``."""
    pos += 1
    while pos < len(data) and data[pos] & 0xC0 == 0x80:
        pos += 1
    return pos


def _matches(
    patterns: Sequence[Regex], buf: Text, same: tuple[tuple[str, ...], ...]
) -> Iterable[tuple[int, int, Any, Text]]:
    """Every finding of every alternative, in text order."""
    if len(patterns) == 1:
        return _finds(patterns[0], buf, same)
    found = [f for p in patterns for f in _finds(p, buf, same)]
    found.sort(key=lambda f: (f[0], -f[1]))
    return found


def _split_top(regex: str, *, start: int = 0, stop: int | None = None) -> list[str] | None:
    """Split ``regex[start:stop]`` at its top-level ``|``; None when it cannot be read safely."""
    stop = len(regex) if stop is None else stop
    pieces, depth, i, begin = [], 0, start, start
    while i < stop:
        ch = regex[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":  # a class: skip to its closing bracket (a leading ']' or '^]' is literal)
            i += 1
            if i < stop and regex[i] == "^":
                i += 1
            if i < stop and regex[i] == "]":
                i += 1
            while i < stop and regex[i] != "]":
                i += 2 if regex[i] == "\\" else 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return None
        elif ch == "|" and depth == 0:
            pieces.append(regex[begin:i])
            begin = i + 1
        i += 1
    if depth != 0:
        return None
    pieces.append(regex[begin:stop])
    return pieces


def _close(regex: str, open_at: int) -> int | None:
    """Index of the parenthesis closing the one at ``open_at``."""
    depth, i = 0, open_at
    while i < len(regex):
        ch = regex[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i += 1
            if i < len(regex) and regex[i] == "^":
                i += 1
            if i < len(regex) and regex[i] == "]":
                i += 1
            while i < len(regex) and regex[i] != "]":
                i += 2 if regex[i] == "\\" else 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


_HEAD = re.compile(r"((?:\(\?P<\w+>)*)\(\?:")


def alternatives(regex: str, limit: int = 64) -> list[str]:
    """A regex as alternatives that each start with their own literal, when every one of them does.

    ``(?:ignore|forget)\\s+x|you`` becomes ``ignore\\s+x``, ``forget\\s+x`` and ``you``: the keyword pass looks
    for each literal and an alternative runs only where its literal occurs. RE2 runs an alternation as fast as
    one branch, so a regex whose alternatives do not all start with a literal of three characters stays whole,
    and so does anything this cannot rewrite safely (inline flags, a quantified group).
    """
    if re.match(r"\(\?[aiLmsux]", regex):
        return [regex]
    top = _split_top(regex)
    if top is None:
        return [regex]
    out: list[str] = []
    for piece in top:
        head = _HEAD.match(piece)
        close = _close(piece, head.end() - 3) if head else None
        inner = _split_top(piece, start=head.end(), stop=close) if head and close is not None else None
        rest = piece[close + 1 :] if close is not None else ""
        if head and inner and len(inner) > 1 and not rest.startswith(("*", "+", "?", "{")):
            out.extend(head.group(1) + alt + rest for alt in inner)
        else:
            out.append(piece)
    if len(out) > limit or any(len(_literal_prefix(p)) < 3 for p in out):
        return [regex]
    try:
        for p in out:
            compile_regex(p, rule="alternative")
    except RuleError:
        return [regex]
    return out


def _parse(text: str) -> ast.Module | None:
    if len(text) > MAX_AST_SOURCE:
        return None
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


class _Lines:
    """AST positions (line, UTF-8 byte column) to character offsets; line starts are found on first use."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts: list[int] | None = None

    @property
    def starts(self) -> list[int]:
        if self._starts is None:
            self._starts = [0, *(m.end() for m in _NEWLINES.finditer(self.text))]
        return self._starts

    def offset(self, lineno: int, col: int) -> int:
        idx = min(max(lineno, 1), len(self.starts)) - 1
        begin = self.starts[idx]
        stop = self.starts[idx + 1] if idx + 1 < len(self.starts) else len(self.text)
        line = self.text[begin:stop]
        if line.isascii():
            return begin + min(col, len(line))
        return begin + len(line.encode("utf-8")[:col].decode("utf-8", "ignore"))


def _decode(blob: str) -> str | None:
    """Base64 (standard or URL-safe) to text, or None when it is not base64 of mostly printable UTF-8."""
    body = blob.strip().rstrip("=")
    if len(body) % 4 == 1:
        return None
    body += "=" * (-len(body) % 4)
    urlsafe = "-" in body or "_" in body
    try:
        raw = base64.b64decode(body, altchars=b"-_" if urlsafe else None, validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    printable = sum(1 for ch in decoded if ch.isprintable() or ch in "\n\r\t")
    return decoded if decoded and printable >= 0.9 * len(decoded) else None


@functools.lru_cache(maxsize=32)
def scanner_for(rules: tuple[Rule, ...]) -> Scanner:
    """A compiled scanner for these rules, shared by every workspace that has the same ones."""
    return Scanner(rules)


def check_examples(rule: Rule, context: Sequence[Rule] = ()) -> None:
    """Raise RuleError unless every positive example fires ``rule`` and no negative one does.

    A decoding rule is checked together with the injection rules of ``context``, which judge what it decodes.
    """
    rules = [rule]
    if rule.decode is not None:
        rules += [r for r in context if r.category == "injection" and r.decode is None and r.id != rule.id]
    scanner = Scanner(rules)
    for example in rule.positives:
        if rule.id not in scanner.fires(example.text, target=example.target):
            raise RuleError(
                f"rule {rule.id}: the positive example {_short(example.text)} ({example.target}) does not fire it"
            )
    for example in rule.negatives:
        if rule.id in scanner.fires(example.text, target=example.target):
            raise RuleError(
                f"rule {rule.id}: the negative example {_short(example.text)} ({example.target}) fires it"
            )


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def redact(text: str, findings: Iterable[Finding], *, label: str = "masked") -> str:
    """``text`` with every finding's span replaced by ``[<label>:<rule>]`` (overlapping spans merged)."""
    spans = sorted((f.start, f.end, f.rule) for f in findings if 0 <= f.start < f.end <= len(text))
    merged: list[list[Any]] = []
    for start, end, rule in spans:
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, rule])
    out, pos = [], 0
    for start, end, rule in merged:
        out.append(text[pos:start])
        out.append(f"[{label}:{rule}]")
        pos = end
    out.append(text[pos:])
    return "".join(out)
