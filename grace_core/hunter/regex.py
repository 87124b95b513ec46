"""Rule regexes on RE2: the time to scan a text grows linearly with it, whatever the pattern.

Python's ``re`` backtracks, so a pattern like ``(a+)+$`` or an innocent-looking rule with two overlapping
``\\s*``/``[A-Za-z]*`` pieces can take minutes on a few hundred kilobytes. RE2 (google-re2) runs every pattern
as an automaton instead; it has no construct that needs backtracking, so a rule using one is refused with a
``RuleError`` naming the construct and what to write instead:

* lookaround (``(?=``, ``(?!``, ``(?<=``, ``(?<!``): consume the context and put the finding in a group named
  ``match``. The finding is that group; the scanner starts its next search at the end of ``match``, so the
  trailing context of one finding can be the leading context of the next (``AKIA…,AKIA…``);
* back-references (``(?P=name)``, ``\\1``): capture each part in its own group and list the groups that must
  be equal in the rule's ``same`` field;
* possessive quantifiers (``*+``) and atomic groups (``(?>``): drop them, RE2 never backtracks;
* counted repetition above 1000 (``{1,12000}``): use ``+`` or ``*`` (a scan window bounds every match).

Syntax notes: ``\\s`` matches Unicode spaces as in Python (Hunter rewrites it, so a no-break space cannot
slip an injection past ``ignore\\s+previous``); ``\\d``, ``\\w`` and ``\\b`` are ASCII; ``$`` is the end of
the text (not before a final newline); ``\\Z`` is read as ``\\z``. Patterns run over UTF-8 bytes; the scanner
turns byte offsets back into character offsets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import re2

from grace_core.errors import RuleError

__all__ = ["MAX_REGEX", "Regex", "Text", "compile_regex"]

MAX_REGEX = 4000  # characters of a rule's regex
_OPTIONS_MEMORY = 16 << 20  # bytes of automaton per pattern (RE2's default is 8 MiB)
# Python's \s for str patterns: ASCII whitespace, \x1c-\x1f, \x85 and the Unicode separators (Z*).
_SPACE_CLASS = r"\s\x{0b}\x{1c}-\x{1f}\x{85}\p{Z}"
_HINT_LOOKAROUND = "consume the context and put the finding in a group named 'match'"
_CONSTRUCTS: tuple[tuple[str, str, str], ...] = (
    ("(?<=", "a lookbehind", _HINT_LOOKAROUND),
    ("(?<!", "a negative lookbehind", _HINT_LOOKAROUND),
    ("(?=", "a lookahead", _HINT_LOOKAROUND),
    ("(?!", "a negative lookahead", _HINT_LOOKAROUND),
    ("(?P=", "a back-reference", "capture each part in its own group and list them in 'same'"),
    ("(?>", "an atomic group", "drop it: RE2 never backtracks"),
    ("(?(", "a conditional group", "write the alternatives out"),
)


class Regex:
    """One compiled rule pattern (RE2), searched over UTF-8 bytes."""

    __slots__ = ("_compiled", "groupindex", "pattern")

    def __init__(self, pattern: str, compiled: Any) -> None:
        self.pattern = pattern
        self._compiled = compiled
        self.groupindex: dict[str, int] = dict(compiled.groupindex)

    def search(self, data: bytes, pos: int = 0) -> Any:
        """The first match at or after byte ``pos`` (``^`` still means the start of ``data``), or None."""
        return self._compiled.search(data, pos)

    def matches_empty(self) -> bool:
        return self._compiled.search(b"") is not None

    def __repr__(self) -> str:
        return f"<Regex {self.pattern!r}>"


def unsupported(pattern: str) -> tuple[str, str, str] | None:
    """The first construct of ``pattern`` that needs backtracking: (its text, its name, what to write instead)."""
    i, n, in_class = 0, len(pattern), False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not in_class and nxt.isdigit() and nxt != "0":
                return (
                    pattern[i : i + 2],
                    "a back-reference",
                    "capture each part in its own group and list them in 'same'",
                )
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            i += 1
            continue
        if ch == "[":
            in_class = True
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":
                i += 1  # a leading ']' is literal
            continue
        if ch == "(":
            for text, name, hint in _CONSTRUCTS:
                if pattern.startswith(text, i):
                    return text, name, hint
        if ch in "*+?}" and pattern[i + 1 : i + 2] == "+":
            return pattern[i : i + 2], "a possessive quantifier", "drop the '+': RE2 never backtracks"
        i += 1
    return None


def translate(pattern: str) -> str:
    """``pattern`` with ``\\s`` widened to Python's Unicode whitespace and ``\\Z`` read as ``\\z``."""
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt == "s":
                out.append(_SPACE_CLASS if in_class else f"[{_SPACE_CLASS}]")
            elif nxt == "S" and not in_class:
                out.append(f"[^{_SPACE_CLASS}]")
            elif nxt == "Z" and not in_class:
                out.append(r"\z")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            for lead in ("^", "]"):
                if pattern[i : i + 1] == lead:
                    out.append(lead)
                    i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=2048)
def compile_regex(pattern: str, *, rule: str, ignore_case: bool = False) -> Regex:
    """Compile a rule's regex with RE2, refusing what it cannot run or what would make the scanner misbehave."""
    if len(pattern) > MAX_REGEX:
        raise RuleError(f"rule {rule}: the regex is longer than {MAX_REGEX} characters")
    construct = unsupported(pattern)
    if construct is not None:
        text, name, hint = construct
        raise RuleError(
            f"rule {rule}: the regex uses {name} ({text!r}), which needs backtracking; Hunter runs rules on RE2, "
            f"a linear-time engine without it: {hint}"
        )
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _OPTIONS_MEMORY
    options.case_sensitive = not ignore_case
    try:
        compiled = re2.compile(translate(pattern), options)
    except re2.error as exc:
        reason = (
            exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        )
        raise RuleError(f"rule {rule}: bad regex {pattern!r}: RE2 cannot compile it: {reason}") from None
    regex = Regex(pattern, compiled)
    if regex.matches_empty():
        # Every position of every text would be an empty finding.
        raise RuleError(f"rule {rule}: the regex {pattern!r} matches the empty string")
    return regex


@dataclass
class Text:
    """A text and its UTF-8 bytes, with byte offsets turned back into character offsets."""

    chars: str
    data: bytes
    _starts: Any = None  # for non-ASCII text: number of characters before each byte offset

    @classmethod
    def of(cls, chars: str) -> Text:
        return cls(chars, chars.encode("utf-8", "surrogatepass"))

    def char(self, offset: int) -> int:
        """The character offset of byte ``offset`` (a character boundary)."""
        if len(self.data) == len(self.chars):
            return offset
        if self._starts is None:
            raw = np.frombuffer(self.data, dtype=np.uint8)
            starts = (raw & 0xC0) != 0x80  # the first byte of each UTF-8 sequence
            self._starts = np.concatenate(([0], np.cumsum(starts, dtype=np.int64)))
        return int(self._starts[offset])
