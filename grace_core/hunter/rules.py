"""Hunter rules as data: the rule model, its validation, and the default pack (``rules.yaml``).

A rule is a plain mapping (YAML in the pack, JSON on the ledger)::

    id: aws-access-key-id            # lower-case letters, digits and '-'
    description: AWS access key id
    severity: critical               # info | low | medium | high | critical
    category: secret                 # secret | injection | code | sqli | traversal | other
    targets: all                     # or a list of: chat, code, memory, file, task
    regex: '(?P<secret>AKIA[A-Z0-9]{16})'
    ignore_case: false               # true: the regex runs over the lower-cased text (write it in lower case)
    keywords: [akia]                 # prefilter: the regex runs only when one of them occurs (any case)
    keywords_base64: []              # words whose base64 forms (every alignment and casing) are keywords
    entropy: 3.0                     # minimum Shannon entropy (bits/char) of the secret
    ast: call:eval_of_input          # a named Python AST check (code target), see checks.py
    decode: base64                   # the match is decoded and the decoded text scanned by injection rules
    mask_keep: 4                     # characters of the sensitive text kept in excerpts
    allow: ['^sk_test_']             # a match whose sensitive text matches one of these is no finding
    examples:
      positive: ['key AKIAIOSFODNN7EXAMPLE']          # each must fire this rule
      negative: [{text: 'AKIA', target: chat}]        # none may; a string uses the rule's first target

A rule needs a ``regex``, ``keywords`` or an ``ast`` check. With only keywords, every occurrence of a keyword
is a finding. Regexes run on RE2 (linear time, see ``regex.py``): no lookaround and no back-references. The
finding is the named group ``match`` when the regex has one (the rest of the match is context that must be
there, what a lookaround said), otherwise the whole match. The sensitive part is the group ``secret`` when there
is one, otherwise the finding; it is what ``entropy`` measures and what excerpts mask. ``same`` lists groups
that must capture the same text (what a back-reference said)::

    regex: '(?P<q>["'']?)(?P<v>[a-z0-9_]+)(?P<q2>["'']?)\\s*=\\s*(?P<w>[a-z0-9_]+)'
    same: [[q, q2], [v, w]]
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from grace_core.errors import RuleError

from .checks import CHECKS
from .regex import compile_regex

__all__ = [
    "CATEGORIES",
    "SEVERITIES",
    "TARGETS",
    "Example",
    "Pack",
    "Rule",
    "base64_keywords",
    "default_pack",
    "load_pack",
    "rule_from_dict",
    "severity_rank",
]

SEVERITIES = ("info", "low", "medium", "high", "critical")
TARGETS = ("chat", "code", "memory", "file", "task")
CATEGORIES = ("secret", "injection", "code", "sqli", "traversal", "other")
DECODERS = ("base64",)
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")
_FIELDS = {
    "id",
    "description",
    "severity",
    "category",
    "targets",
    "regex",
    "ignore_case",
    "keywords",
    "keywords_base64",
    "entropy",
    "ast",
    "decode",
    "mask_keep",
    "same",
    "allow",
    "examples",
    "enabled",
}
MAX_EXAMPLE = 20_000


def severity_rank(severity: str) -> int:
    """0 for info up to 4 for critical; raises RuleError for anything else."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        raise RuleError(f"unknown severity {severity!r}; one of {', '.join(SEVERITIES)}") from None


@dataclass(frozen=True)
class Example:
    """One example text and the target it is scanned as."""

    text: str
    target: str

    def as_data(self, default_target: str) -> str | dict[str, str]:
        return self.text if self.target == default_target else {"text": self.text, "target": self.target}


@dataclass(frozen=True)
class Rule:
    """One validated rule. ``as_dict()`` is its data form (the YAML/JSON mapping)."""

    id: str
    description: str
    severity: str
    category: str
    targets: tuple[str, ...]
    regex: str | None = None
    ignore_case: bool = False
    keywords: tuple[str, ...] = ()
    keywords_base64: tuple[str, ...] = ()
    entropy: float | None = None
    ast: str | None = None
    decode: str | None = None
    mask_keep: int = 4
    same: tuple[tuple[str, ...], ...] = ()
    allow: tuple[str, ...] = ()
    positives: tuple[Example, ...] = ()
    negatives: tuple[Example, ...] = ()
    enabled: bool = field(default=True, compare=False)

    @property
    def all_keywords(self) -> tuple[str, ...]:
        """The prefilter: the keywords (lower-cased) plus the base64 forms of ``keywords_base64``."""
        words = [k.lower() for k in self.keywords]
        words += base64_keywords(self.keywords_base64)
        return tuple(dict.fromkeys(words))

    def as_dict(self) -> dict[str, Any]:
        """The rule as data, with only the fields that differ from their defaults (plus the required ones)."""
        out: dict[str, Any] = {
            "id": self.id,
            "description": self.description,
            "severity": self.severity,
            "category": self.category,
            "targets": "all" if self.targets == TARGETS else list(self.targets),
        }
        if self.regex is not None:
            out["regex"] = self.regex
        if self.ignore_case:
            out["ignore_case"] = True
        if self.keywords:
            out["keywords"] = list(self.keywords)
        if self.keywords_base64:
            out["keywords_base64"] = list(self.keywords_base64)
        if self.entropy is not None:
            out["entropy"] = self.entropy
        if self.ast is not None:
            out["ast"] = self.ast
        if self.decode is not None:
            out["decode"] = self.decode
        if self.mask_keep != 4:
            out["mask_keep"] = self.mask_keep
        if self.same:
            out["same"] = [list(group) for group in self.same]
        if self.allow:
            out["allow"] = list(self.allow)
        first = self.targets[0]
        out["examples"] = {
            "positive": [e.as_data(first) for e in self.positives],
            "negative": [e.as_data(first) for e in self.negatives],
        }
        return out

    def with_changes(self, changes: Mapping[str, Any]) -> Rule:
        """A new rule with some fields of the data form replaced (validated like a new rule)."""
        data = self.as_dict()
        data.update(changes)
        return rule_from_dict(data, enabled=self.enabled)


def _text(data: Mapping[str, Any], key: str, *, rule: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise RuleError(f"rule {rule}: '{key}' is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise RuleError(f"rule {rule}: '{key}' must be a non-empty string")
    return value


def _strings(value: Any, *, what: str, rule: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise RuleError(f"rule {rule}: '{what}' must be a list of strings")
    items = tuple(value)
    if not all(isinstance(v, str) and v for v in items):
        raise RuleError(f"rule {rule}: '{what}' must be a list of non-empty strings")
    return items


def _targets(value: Any, *, rule: str) -> tuple[str, ...]:
    if value is None or value == "all":
        return TARGETS
    items = _strings(value, what="targets", rule=rule)
    bad = [t for t in items if t not in TARGETS]
    if bad or not items:
        raise RuleError(
            f"rule {rule}: targets must be 'all' or a list of {', '.join(TARGETS)}; got {value!r}"
        )
    return tuple(t for t in TARGETS if t in items)  # canonical order


def _examples(value: Any, *, rule: str, targets: tuple[str, ...]) -> tuple[tuple[Example, ...], ...]:
    if not isinstance(value, Mapping):
        raise RuleError(f"rule {rule}: 'examples' must map 'positive' and 'negative' to lists of texts")
    unknown = set(value) - {"positive", "negative"}
    if unknown:
        raise RuleError(f"rule {rule}: unknown example kinds {sorted(unknown)}; use positive and negative")
    out = []
    for kind in ("positive", "negative"):
        items = value.get(kind)
        if not isinstance(items, list) or not items:
            raise RuleError(f"rule {rule}: needs at least one {kind} example")
        parsed = []
        for item in items:
            if isinstance(item, str):
                text, target = item, targets[0]
            elif isinstance(item, Mapping) and set(item) <= {"text", "target"} and "text" in item:
                text, target = item["text"], item.get("target", targets[0])
            else:
                raise RuleError(
                    f"rule {rule}: an example is a string or a mapping with 'text' (and 'target')"
                )
            if not isinstance(text, str) or not text or len(text) > MAX_EXAMPLE:
                raise RuleError(f"rule {rule}: an example text must be 1 to {MAX_EXAMPLE} characters")
            if target not in TARGETS:
                raise RuleError(f"rule {rule}: example target {target!r} is not one of {', '.join(TARGETS)}")
            parsed.append(Example(text, target))
        out.append(tuple(parsed))
    return tuple(out)


def rule_from_dict(data: Mapping[str, Any], *, enabled: bool | None = None) -> Rule:
    """Validate a rule's data form (everything but its examples' behaviour, which needs the scanner)."""
    if not isinstance(data, Mapping):
        raise RuleError(f"a rule is a mapping, not {type(data).__name__}")
    rid = data.get("id")
    if not isinstance(rid, str) or not _ID.match(rid):
        raise RuleError(
            f"a rule id is 2 to 64 lower-case letters, digits and '-', starting alphanumeric; got {rid!r}"
        )
    unknown = set(data) - _FIELDS
    if unknown:
        raise RuleError(f"rule {rid}: unknown fields {sorted(unknown)}; known: {', '.join(sorted(_FIELDS))}")
    description = _text(data, "description", rule=rid)
    severity = _text(data, "severity", rule=rid)
    severity_rank(severity or "")
    category = data.get("category", "other")
    if category not in CATEGORIES:
        raise RuleError(f"rule {rid}: category must be one of {', '.join(CATEGORIES)}; got {category!r}")
    targets = _targets(data.get("targets"), rule=rid)
    regex = _text(data, "regex", rule=rid, required=False)
    ignore_case = data.get("ignore_case", False)
    if not isinstance(ignore_case, bool):
        raise RuleError(f"rule {rid}: ignore_case is true or false")
    keywords = _strings(data.get("keywords"), what="keywords", rule=rid)
    keywords_b64 = _strings(data.get("keywords_base64"), what="keywords_base64", rule=rid)
    ast_check = _text(data, "ast", rule=rid, required=False)
    if ast_check is not None and ast_check not in CHECKS:
        raise RuleError(f"rule {rid}: unknown AST check {ast_check!r}; known: {', '.join(sorted(CHECKS))}")
    if regex is None and not keywords and ast_check is None:
        raise RuleError(f"rule {rid}: needs a regex, keywords or an ast check")
    if keywords_b64 and regex is None:
        raise RuleError(f"rule {rid}: keywords_base64 is a prefilter for a regex; the rule has none")
    same = _same(data.get("same"), rule=rid)
    if same and regex is None:
        raise RuleError(f"rule {rid}: same names groups of a regex; the rule has none")
    if regex is not None:
        groups = compile_regex(regex, rule=rid).groupindex
        missing = sorted({g for group in same for g in group} - set(groups))
        if missing:
            raise RuleError(f"rule {rid}: same names groups the regex does not have: {', '.join(missing)}")
        if ignore_case and regex != regex.lower() and re.search(r"(?<!\\)[A-Z]", _literal_parts(regex)):
            raise RuleError(
                f"rule {rid}: with ignore_case the regex runs over lower-cased text; write its letters in lower case"
            )
    allow = _strings(data.get("allow"), what="allow", rule=rid)
    if allow and regex is None:
        raise RuleError(
            f"rule {rid}: allow tells which matches of a regex are no findings; the rule has none"
        )
    for pattern in allow:
        compile_regex(pattern, rule=rid)
    entropy = data.get("entropy")
    if entropy is not None:
        if isinstance(entropy, bool) or not isinstance(entropy, int | float) or not 0 < entropy <= 8:
            raise RuleError(f"rule {rid}: entropy is a number of bits per character in (0, 8]")
        if regex is None:
            raise RuleError(f"rule {rid}: entropy applies to regex matches; the rule has no regex")
        entropy = float(entropy)
    decode = data.get("decode")
    if decode is not None and decode not in DECODERS:
        raise RuleError(f"rule {rid}: decode must be one of {', '.join(DECODERS)}")
    if decode is not None and regex is None:
        raise RuleError(f"rule {rid}: decode needs a regex that finds the encoded text")
    mask_keep = data.get("mask_keep", 4)
    if isinstance(mask_keep, bool) or not isinstance(mask_keep, int) or not 0 <= mask_keep <= 16:
        raise RuleError(f"rule {rid}: mask_keep is an integer from 0 to 16")
    positives, negatives = _examples(data.get("examples"), rule=rid, targets=targets)
    if enabled is None:
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise RuleError(f"rule {rid}: enabled is true or false")
    return Rule(
        id=rid,
        description=" ".join((description or "").split()),
        severity=severity or "",
        category=category,
        targets=targets,
        regex=regex,
        ignore_case=ignore_case,
        keywords=keywords,
        keywords_base64=keywords_b64,
        entropy=entropy,
        ast=ast_check,
        decode=decode,
        mask_keep=mask_keep,
        same=same,
        allow=allow,
        positives=positives,
        negatives=negatives,
        enabled=enabled,
    )


def _same(value: Any, *, rule: str) -> tuple[tuple[str, ...], ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise RuleError(f"rule {rule}: same is a list of lists of group names ([[a, b], ...])")
    out = []
    for group in value:
        names = _strings(group, what="same", rule=rule)
        if len(names) < 2:
            raise RuleError(f"rule {rule}: each list in same names at least two groups")
        out.append(names)
    return tuple(out)


def _literal_parts(regex: str) -> str:
    """The regex without escapes (``\\S``, ``\\pL``, ``\\x{85}``...) and group names: what is left is literal text."""
    return re.sub(r"\\[pPx]\{[^}]*\}|\\[pP][A-Za-z]|\\[A-Za-z]|\(\?P<[^>]*>|\{[^}]*\}", "", regex)


@functools.lru_cache(maxsize=256)
def _b64_fragments(word: str) -> tuple[str, ...]:
    out: list[str] = []
    data = word.encode("utf-8")
    for variant in dict.fromkeys((data, data.lower(), data.upper(), data[:1].upper() + data[1:])):
        for pad in range(3):
            encoded = base64.b64encode(b"\x00" * pad + variant).decode("ascii")
            # Only the characters made entirely of the word's own bits are the same whatever surrounds it.
            first = math.ceil(pad * 8 / 6)
            last = (8 * (pad + len(variant))) // 6
            fragment = encoded[first:last]
            if len(fragment) >= 6:
                out.append(fragment)
                out.append(fragment.replace("+", "-").replace("/", "_"))  # the URL-safe alphabet
    return tuple(dict.fromkeys(f.lower() for f in out))


def base64_keywords(words: Iterable[str]) -> list[str]:
    """The base64 forms of ``words`` (lower-case, original, capitalised and upper-case; every alignment)."""
    return [frag for w in words for frag in _b64_fragments(w)]


@dataclass(frozen=True)
class Pack:
    """A named, versioned list of rules (the default pack ships as ``rules.yaml``)."""

    name: str
    version: str
    rules: tuple[Rule, ...]

    def get(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        raise RuleError(f"the pack {self.name} has no rule {rule_id!r}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "rules": [dict(r.as_dict(), enabled=r.enabled) for r in self.rules],
        }


def pack_from_dict(data: Mapping[str, Any]) -> Pack:
    if not isinstance(data, Mapping) or not isinstance(data.get("rules"), list):
        raise RuleError("a rule pack is a mapping with 'name', 'version' and a list of 'rules'")
    rules = tuple(rule_from_dict(r) for r in data["rules"])
    seen: set[str] = set()
    for r in rules:
        if r.id in seen:
            raise RuleError(f"the pack has two rules with id {r.id!r}")
        seen.add(r.id)
    return Pack(str(data.get("name") or "unnamed"), str(data.get("version") or "0"), rules)


def load_pack(text: str) -> Pack:
    """Parse and validate a pack from YAML text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RuleError(f"the rule pack is not valid YAML: {exc}") from None
    return pack_from_dict(data)


@functools.lru_cache(maxsize=1)
def default_pack() -> Pack:
    """The pack that ships with Grace (``grace_core/hunter/rules.yaml``)."""
    text = importlib.resources.files(__package__).joinpath("rules.yaml").read_text(encoding="utf-8")
    return load_pack(text)


def replace_enabled(rule: Rule, enabled: bool) -> Rule:
    return replace(rule, enabled=enabled)


def rules_by_id(rules: Sequence[Rule]) -> dict[str, Rule]:
    return {r.id: r for r in rules}
