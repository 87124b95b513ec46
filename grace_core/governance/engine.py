"""Governance: policies as data, explained decisions, approvals.

**Policies are data.** A policy is a row of the ``policies`` table, a projection of ``governance.policy_added``,
``.policy_updated``, ``.policy_removed`` and ``governance.pack_loaded`` events; a new workspace loads the default
pack (``grace_core/data/policies.yaml``) in one ``governance.pack_loaded`` event at genesis. A policy has:

* ``id`` — a short slug, unique in the workspace;
* ``effect`` — ``allow``, ``deny`` or ``review`` (allowed once an admin approves);
* ``actions`` — globs over dotted action names (``chat.send``, ``memory.*``, ``**.read``). An entry may carry
  a resource glob after the first ``:`` — ``memory.write:/system/**`` — and then matches only that action on
  a matching resource. Action names never contain ``:``, so the first ``:`` always separates the two;
* ``resources`` — globs the request's resource must match (one of them); empty means any resource, or none.
  Both constraints apply when both are given;
* ``roles`` and/or ``actors`` — who it is about: role names (``admin``, ``researcher``, ``viewer``, ``system``;
  ``*`` = anyone with a role) and actor names (``*`` = anyone at all, even an unknown actor). A request matches
  when its actor is listed, or its role is;
* ``conditions`` — all must hold on the request context: ``{key, op, value}`` with ``key`` a dotted path into
  the context and ``op`` one of eq, ne, in, not_in, lt, le, gt, ge, exists, matches (a regular expression the
  whole string must match). A key that is missing (or of another type) makes a condition false (for deny
  policies too, as in Cedar): write conditions on context the caller always sends. Nothing is ever evaluated
  as code;
* ``priority`` (an integer, default 0) and ``description``.

**Globs.** In resources, ``*`` matches within one ``/``-separated segment, ``?`` one character of a segment and
``**`` (a whole segment) any number of segments, so ``/system/**`` matches ``/system`` itself and everything
below it, but not ``/systemic``. In actions the separator is ``.``: ``memory.*`` matches ``memory.write`` but
not ``memory.item.write``; ``memory.**`` matches both; ``**`` matches every action.

**Decisions.** Deny beats review, review beats allow, and nothing matching means deny (default deny). Priority
never overrides an effect: it only orders the policies within an effect (and so the explanation). Every
decision says which policies matched and why; ``decide`` logs it as a ``governance.decision`` event, while
``evaluate`` is the same decision without the log (what-ifs, benchmarks). Decisions come from an in-memory
index rebuilt whenever a policy event commits: policies are grouped by the first segment of their action globs,
globs are compiled once, the candidates of an (action, role) pair are computed once, and whole decisions are
cached per identical request (the cache goes with the index).

**Approvals.** A ``review`` decision raises an approval request (``governance.approval_requested`` → the
``approvals`` table, state ``pending``). An admin or the system approves or rejects it
(``governance.approval_decided``), never the requester themself. ``require`` waits for the answer in a live
workspace; in a deterministic one (ManualClock, delivery in the publishing thread) a waiting call could only be
answered by another thread on a clock that does not move, so there it checks once and the caller retries with
``require(..., approval_id=...)`` once the approval is decided.
"""

from __future__ import annotations

import importlib.resources
import json
import operator
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from ..causal import handling
from ..errors import EventError, PermissionDenied, PolicyError
from ..events import Event, canonical_json
from ..mesh import Message

if TYPE_CHECKING:
    from ..workspace import Workspace

__all__ = [
    "APPROVER_ROLES",
    "EFFECTS",
    "OPS",
    "ROLES",
    "Approval",
    "Condition",
    "Decision",
    "Governance",
    "Policy",
    "PolicyIndex",
    "compile_glob",
    "default_pack",
    "glob_regex",
    "load_policies",
]

EFFECTS = ("allow", "review", "deny")  # weakest first: the strongest effect that matches wins
_RANK = {effect: rank for rank, effect in enumerate(EFFECTS)}
OPS = ("eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "exists", "matches")
ROLES = ("admin", "researcher", "viewer", "system")
APPROVER_ROLES = ("admin", "system")
DEFAULT_PACK = "default"
POLICY_FIELDS = (
    "id",
    "effect",
    "actions",
    "resources",
    "roles",
    "actors",
    "conditions",
    "priority",
    "description",
)
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_ACTION = re.compile(r"^[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*$")
_ACTION_SEGMENT = re.compile(r"^(?:\*\*|[a-z0-9_*?]+)$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_GLOB_FORBIDDEN = re.compile(r"[\[\]{}\\]")
_ROLE_WORDS = {
    "admin": "admins",
    "researcher": "researchers",
    "viewer": "viewers",
    "system": "service actors",
    "*": "anyone with a role",
}
_OP_WORDS = {
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "in": "in",
    "not_in": "not in",
    "matches": "matches",
}
_CACHE_LIMIT = 65_536  # cached decisions per index; the cache is emptied when full
_CANDIDATE_LIMIT = 16_384
_MISSING: Any = object()
_LOOKUP: Any = object()
_valid_actions: set[str] = set()


# -- globs ---------------------------------------------------------------------------------------------------
def glob_regex(pattern: str, sep: str) -> str:
    """The regular expression of a glob whose segments are separated by ``sep``.

    ``*`` is any run of characters within a segment, ``?`` one character of a segment, and ``**`` (a whole
    segment) any number of segments, zero included: ``a/**`` matches ``a`` and ``a/x/y``, ``**/b`` matches
    ``b`` and ``x/b``, ``a/**/b`` matches ``a/b`` and ``a/x/y/b``.
    """
    s = re.escape(sep)
    within = f"[^{s}]"
    segments = pattern.split(sep)
    out: list[str] = []
    for i, seg in enumerate(segments):
        if seg == "**":
            if len(segments) == 1:
                out.append(".*")
            elif i == 0:
                out.append(f"(?:.*{s})?")  # absorbs the separator after it
            else:
                out.append(f"(?:{s}.*)?")  # absorbs the separator before it
            continue
        if i > 0 and not (i == 1 and segments[0] == "**"):
            out.append(s)
        out.append("".join(within + "*" if c == "*" else within if c == "?" else re.escape(c) for c in seg))
    return "".join(out)


def compile_glob(pattern: str, sep: str) -> Callable[[str], bool]:
    """A predicate for one glob (see ``glob_regex``); a glob without wildcards is a plain comparison."""
    if "*" not in pattern and "?" not in pattern:
        return pattern.__eq__
    match = re.compile(glob_regex(pattern, sep), re.DOTALL).fullmatch
    return lambda text: match(text) is not None


def _compile_globs(patterns: Sequence[str], sep: str) -> Callable[[str], bool]:
    if len(patterns) == 1:
        return compile_glob(patterns[0], sep)
    literal = frozenset(p for p in patterns if "*" not in p and "?" not in p)
    wild = [p for p in patterns if p not in literal]
    if not wild:
        return literal.__contains__
    match = re.compile("|".join(f"(?:{glob_regex(p, sep)})" for p in wild), re.DOTALL).fullmatch
    if not literal:
        return lambda text: match(text) is not None
    return lambda text: text in literal or match(text) is not None


def _check_glob_segments(pattern: str, sep: str, what: str) -> None:
    segments = pattern.split(sep)
    for i, seg in enumerate(segments):
        if "**" in seg and seg != "**":
            raise PolicyError(f"bad {what} {pattern!r}: '**' must be a whole segment (between '{sep}'s)")
        if seg == "**" and i > 0 and segments[i - 1] == "**":
            raise PolicyError(f"bad {what} {pattern!r}: '**{sep}**' says nothing more than '**'")


def _check_action_glob(pattern: str) -> None:
    if not isinstance(pattern, str) or not pattern or len(pattern) > 200:
        raise PolicyError(f"bad action glob {pattern!r}: a non-empty string of at most 200 characters")
    segments = pattern.split(".")
    if not all(_ACTION_SEGMENT.match(seg) for seg in segments):
        raise PolicyError(
            f"bad action glob {pattern!r}: dot-separated lower-case words of letters, digits and '_', with the "
            "wildcards '*' (within a segment), '?' and '**' (any number of segments)"
        )
    _check_glob_segments(pattern, ".", "action glob")


def _check_resource_glob(pattern: str) -> None:
    if not isinstance(pattern, str) or not pattern or len(pattern) > 1000 or _CONTROL.search(pattern):
        raise PolicyError(
            f"bad resource glob {pattern!r}: a non-empty string of at most 1000 characters, no control characters"
        )
    if _GLOB_FORBIDDEN.search(pattern):
        raise PolicyError(
            f"bad resource glob {pattern!r}: only the wildcards '*', '?' and '**' are supported "
            "('[...]', '{...}' and '\\' are not)"
        )
    _check_glob_segments(pattern, "/", "resource glob")


def _check_action(action: str) -> None:
    if action in _valid_actions:
        return
    if not isinstance(action, str) or len(action) > 200 or not _ACTION.match(action):
        raise PolicyError(
            f"bad action {action!r}: dot-separated lower-case words (e.g. 'memory.write'); "
            "write a resource after a ':' (e.g. 'memory.write:/notes/a.md') or pass it separately"
        )
    if len(_valid_actions) < 100_000:
        _valid_actions.add(action)


def _check_resource(resource: str | None) -> None:
    if resource is None:
        return
    if not isinstance(resource, str) or not resource or len(resource) > 1000 or _CONTROL.search(resource):
        raise PolicyError(
            f"bad resource {resource!r}: a non-empty string of at most 1000 characters, no control characters"
        )


# -- conditions ----------------------------------------------------------------------------------------------
def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(a: object, b: object) -> bool:
    """JSON equality that keeps booleans apart from numbers (``True`` is not ``1``)."""
    if _number(a) and _number(b):
        return a == b
    return type(a) is type(b) and a == b


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, str | bool | int | float)


@dataclass(frozen=True)
class Condition:
    """One test on the request context: ``context[key] <op> value`` (``key`` is a dotted path)."""

    key: str
    op: str
    value: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or len(self.key) > 200 or not _KEY.match(self.key):
            raise PolicyError(
                f"bad condition key {self.key!r}: a dotted path of names (e.g. 'network' or 'params.interval')"
            )
        if self.op not in OPS:
            raise PolicyError(f"unknown condition op {self.op!r}; use one of {', '.join(OPS)}")
        value = self.value
        if isinstance(value, tuple):
            value = list(value)
            object.__setattr__(self, "value", value)
        where = f"condition {self.key} {self.op}"
        if self.op in ("in", "not_in"):
            if not isinstance(value, list) or not all(_scalar(v) for v in value):
                raise PolicyError(f"{where}: the value must be a list of strings, numbers, booleans or nulls")
        elif self.op in ("lt", "le", "gt", "ge"):
            if not (_number(value) or isinstance(value, str)):
                raise PolicyError(f"{where}: the value must be a number or a string, not {value!r}")
        elif self.op == "exists":
            if value is None:
                object.__setattr__(self, "value", True)
            elif not isinstance(value, bool):
                raise PolicyError(f"{where}: the value must be true or false, not {value!r}")
        elif self.op == "matches":
            if not isinstance(value, str) or len(value) > 500:
                raise PolicyError(
                    f"{where}: the value must be a regular expression of at most 500 characters"
                )
            try:
                re.compile(value)
            except re.error as exc:
                raise PolicyError(f"{where}: {value!r} is not a valid regular expression: {exc}") from exc
        elif not _scalar(value):
            raise PolicyError(f"{where}: the value must be a string, number, boolean or null")
        if isinstance(value, float) and value != value:  # NaN equals nothing: always a mistake
            raise PolicyError(f"{where}: NaN is not a value")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        if not isinstance(data, Mapping):
            raise PolicyError(f"a condition is a mapping {{key, op, value}}, not {data!r}")
        unknown = set(data) - {"key", "op", "value"}
        if unknown:
            raise PolicyError(
                f"unknown condition field(s) {', '.join(sorted(map(str, unknown)))}; use key, op, value"
            )
        if "key" not in data or "op" not in data:
            raise PolicyError(f"a condition needs a key and an op: {dict(data)!r}")
        if "value" not in data and data["op"] != "exists":
            raise PolicyError(f"condition {data['key']} {data['op']} needs a value")
        return cls(data["key"], data["op"], data.get("value"))

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "op": self.op, "value": self.value}

    def text(self) -> str:
        if self.op == "exists":
            return f"{self.key} exists" if self.value else f"{self.key} is absent"
        return f"{self.key} {_OP_WORDS[self.op]} {json.dumps(self.value)}"

    def compile(self) -> Callable[[Mapping[str, Any] | None], bool]:
        """A predicate over a request context (None counts as an empty context)."""
        path = self.key.split(".")
        get = _getter(path)
        if self.op == "exists":
            want = bool(self.value)

            def exists(ctx: Mapping[str, Any] | None) -> bool:
                v = get(ctx)
                return (v is not _MISSING and v is not None) is want

            return exists
        test = _test(self.op, self.value)

        def holds(ctx: Mapping[str, Any] | None) -> bool:
            v = get(ctx)
            return v is not _MISSING and test(v)

        return holds


def _getter(path: list[str]) -> Callable[[Mapping[str, Any] | None], Any]:
    if len(path) == 1:
        key = path[0]

        def one(ctx: Mapping[str, Any] | None) -> Any:
            return _MISSING if ctx is None else ctx.get(key, _MISSING)

        return one

    def walk(ctx: Mapping[str, Any] | None) -> Any:
        value: Any = ctx
        for part in path:
            if not isinstance(value, Mapping):
                return _MISSING
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return value
        return value

    return walk


def _test(op: str, value: Any) -> Callable[[Any], bool]:
    if op in ("eq", "ne"):
        negate = op == "ne"
        if isinstance(value, str):  # the common case, without the general comparison's type checks
            return lambda v: (type(v) is str and v == value) is not negate
        return lambda v: _same(v, value) is not negate
    if op in ("in", "not_in"):
        negate = op == "not_in"
        if all(isinstance(x, str) for x in value):
            options = frozenset(value)
            return lambda v: (type(v) is str and v in options) is not negate
        return lambda v: any(_same(v, x) for x in value) is not negate
    if op in ("lt", "le", "gt", "ge"):
        compare = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}[op]
        if isinstance(value, str):
            return lambda v: type(v) is str and compare(v, value)
        return lambda v: (type(v) is int or type(v) is float) and compare(v, value)
    if op == "matches":
        match = re.compile(value).fullmatch
        return lambda v: type(v) is str and match(v) is not None
    raise PolicyError(f"unknown condition op {op!r}")  # pragma: no cover - Condition checks it first


# -- policies ------------------------------------------------------------------------------------------------
def _strings(value: object, what: str, pid: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"policy {pid!r}: {what} must be a list of strings, not {value!r}")
    seen: dict[str, None] = dict.fromkeys(value)  # drop duplicates, keep order
    return tuple(seen)


@dataclass(frozen=True)
class Policy:
    """One governance policy (see the module docstring for what each field means). Validated on creation."""

    id: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    actors: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()
    priority: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        pid = self.id
        if not isinstance(pid, str) or not _ID.match(pid):
            raise PolicyError(
                f"bad policy id {pid!r}: 1 to 128 lower-case letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        if self.effect not in EFFECTS:
            raise PolicyError(f"policy {pid!r}: unknown effect {self.effect!r}; use allow, deny or review")
        for name in ("actions", "resources", "roles", "actors"):
            object.__setattr__(self, name, _strings(getattr(self, name), name, pid))
        if not self.actions:
            raise PolicyError(f"policy {pid!r}: it needs at least one action glob")
        try:
            for entry in self.actions:
                action, sep, resource = entry.partition(":")
                _check_action_glob(action)
                if sep:
                    _check_resource_glob(resource)
            for resource in self.resources:
                _check_resource_glob(resource)
        except PolicyError as exc:
            raise PolicyError(f"policy {pid!r}: {exc}") from None
        if not self.roles and not self.actors:
            raise PolicyError(
                f"policy {pid!r}: say whom it is about with roles and/or actors ('*' in actors means anyone)"
            )
        unknown = [r for r in self.roles if r not in ROLES and r != "*"]
        if unknown:
            raise PolicyError(
                f"policy {pid!r}: unknown role(s) {', '.join(unknown)}; roles: {', '.join(ROLES)}, *"
            )
        for actor in self.actors:
            if not actor or len(actor) > 200 or _CONTROL.search(actor) or (actor != "*" and "*" in actor):
                raise PolicyError(f"policy {pid!r}: bad actor {actor!r} (an actor name, or '*' for anyone)")
        conditions = self.conditions or ()
        if not isinstance(conditions, list | tuple):
            raise PolicyError(f"policy {pid!r}: conditions must be a list of {{key, op, value}}")
        try:
            built = tuple(c if isinstance(c, Condition) else Condition.from_dict(c) for c in conditions)
        except PolicyError as exc:
            raise PolicyError(f"policy {pid!r}: {exc}") from None
        object.__setattr__(self, "conditions", built)
        if (
            not isinstance(self.priority, int)
            or isinstance(self.priority, bool)
            or abs(self.priority) > 1_000_000
        ):
            raise PolicyError(f"policy {pid!r}: priority must be an integer from -1000000 to 1000000")
        if not isinstance(self.description, str) or len(self.description) > 2000:
            raise PolicyError(f"policy {pid!r}: the description must be text of at most 2000 characters")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """Build a policy from a mapping (a YAML entry, a table row, an event payload); unknown keys are errors."""
        if not isinstance(data, Mapping):
            raise PolicyError(
                f"a policy is a mapping of {', '.join(POLICY_FIELDS)}, not {type(data).__name__}"
            )
        pid = data.get("id")
        unknown = sorted(str(k) for k in data if k not in POLICY_FIELDS)
        if unknown:
            raise PolicyError(
                f"policy {pid!r}: unknown field(s) {', '.join(unknown)}; fields: {', '.join(POLICY_FIELDS)}"
            )
        for required in ("id", "effect", "actions"):
            if required not in data:
                raise PolicyError(f"policy {pid!r}: the field {required!r} is required")
        return cls(
            id=data["id"],
            effect=data["effect"],
            actions=data["actions"],
            resources=data.get("resources") or (),
            roles=data.get("roles") or (),
            actors=data.get("actors") or (),
            conditions=data.get("conditions") or (),
            priority=0 if data.get("priority") is None else data["priority"],
            description=data.get("description") or "",
        )

    def as_dict(self) -> dict[str, Any]:
        """Every field, lists as lists: the form stored in events and (as JSON) in the table."""
        return {
            "id": self.id,
            "effect": self.effect,
            "actions": list(self.actions),
            "resources": list(self.resources),
            "roles": list(self.roles),
            "actors": list(self.actors),
            "conditions": [c.as_dict() for c in self.conditions],
            "priority": self.priority,
            "description": self.description,
        }

    def summary(self, actions: Sequence[str] | None = None) -> str:
        """One sentence: who, what, where, when. A decision names only the ``actions`` entries that matched."""
        who = [_ROLE_WORDS.get(r, r) for r in self.roles]
        who += ["anyone" if a == "*" else repr(a) for a in self.actors]
        whom = _join(who)
        what = _join([e.replace(":", " on ", 1) for e in (self.actions if actions is None else actions)])
        where = f" on {_join(list(self.resources), 'or')}" if self.resources else ""
        when = f" when {_join([c.text() for c in self.conditions])}" if self.conditions else ""
        verb = {
            "allow": f"allows {whom} to",
            "deny": f"forbids {whom} to",
            "review": f"requires an admin's approval for {whom} to",
        }[self.effect]
        return f"policy {self.id!r} {verb} {what}{where}{when}"


def _join(items: Sequence[str], last: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def load_policies(source: str | Path | Mapping[str, Any] | Sequence[Any]) -> list[Policy]:
    """Policies from YAML text, a YAML file, or already-parsed data.

    Accepted shapes: a mapping with a ``policies`` list (a pack, optionally with a ``name``), a list of
    policies, or a single policy mapping. Ids must be unique.
    """
    data: Any = source
    if isinstance(source, Path):
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
    elif isinstance(source, str):
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise PolicyError(f"the policies are not valid YAML: {exc}") from exc
    if isinstance(data, Mapping) and "policies" in data:
        data = data["policies"]
    elif isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list | tuple):
        raise PolicyError("expected a policy, a list of policies, or a mapping with a 'policies' list")
    policies = [p if isinstance(p, Policy) else Policy.from_dict(p) for p in data]
    ids = [p.id for p in policies]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise PolicyError(f"duplicate policy id(s): {', '.join(duplicates)}")
    return policies


def _pack_text() -> str:
    return importlib.resources.files("grace_core").joinpath("data/policies.yaml").read_text(encoding="utf-8")


def default_pack() -> list[Policy]:
    """The policies a new workspace starts with (``grace_core/data/policies.yaml``)."""
    return load_policies(_pack_text())


# -- decisions -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """The outcome of one request, with the policies behind it and the reasons in words.

    ``policy_ids`` are the policies that decided the effect (highest priority first); ``matched`` lists every
    policy that matched, with its effect, including those a stronger effect overrode.
    """

    effect: str
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    approval_id: str | None = None
    matched: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def allowed(self) -> bool:
        return self.effect == "allow"

    @property
    def explanation(self) -> str:
        return "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "effect": self.effect,
            "policy_ids": list(self.policy_ids),
            "reasons": list(self.reasons),
            "approval_id": self.approval_id,
            "matched": [list(m) for m in self.matched],
        }


class _Compiled:
    """A policy prepared for evaluation: its globs and conditions compiled once."""

    __slots__ = (
        "actions",
        "actors",
        "any_actor",
        "any_role",
        "check",
        "effect",
        "id",
        "policy",
        "priority",
        "rank",
        "resources",
        "roles",
    )

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.id = policy.id
        self.effect = policy.effect
        self.rank = _RANK[policy.effect]
        self.priority = policy.priority
        self.roles = frozenset(r for r in policy.roles if r != "*")
        self.any_role = "*" in policy.roles
        self.actors = frozenset(a for a in policy.actors if a != "*")
        self.any_actor = "*" in policy.actors
        # (action matcher, resource matcher or None) per action entry
        self.actions: list[tuple[Callable[[str], bool], Callable[[str], bool] | None, str]] = []
        for entry in policy.actions:
            action, sep, resource = entry.partition(":")
            self.actions.append(
                (
                    compile_glob(action, "."),
                    compile_glob(resource, "/") if sep else None,
                    action.split(".", 1)[0],
                )
            )
        self.resources = _compile_globs(policy.resources, "/") if policy.resources else None
        tests = [c.compile() for c in policy.conditions]
        if not tests:
            self.check: Callable[[Mapping[str, Any] | None], bool] | None = None
        elif len(tests) == 1:
            self.check = tests[0]
        else:
            self.check = lambda ctx: all(t(ctx) for t in tests)

    def about(self, actor: str, role: str | None) -> bool:
        return (
            self.any_actor
            or actor in self.actors
            or (role is not None and (self.any_role or role in self.roles))
        )


# A candidate: the policy, the resource test its matching action entries and resources impose (None = any),
# and the reason it gives when it matches (naming only the entries that match the action).
_Candidate = tuple[_Compiled, Callable[[str | None], bool] | None, str]


def _resource_test(compiled: _Compiled, action: str) -> tuple[bool, Callable[[str | None], bool] | None]:
    """Whether the policy is about ``action`` and, if so, the test a request's resource must pass."""
    entry_tests = []
    unconstrained = False
    for action_match, resource_match, _first in compiled.actions:
        if action_match(action):
            if resource_match is None:
                unconstrained = True
            else:
                entry_tests.append(resource_match)
    if not unconstrained and not entry_tests:
        return False, None
    tests = [] if unconstrained else entry_tests
    policy_test = compiled.resources
    if not tests and policy_test is None:
        return True, None
    if len(tests) == 1 and policy_test is None:
        only = tests[0]
        return True, lambda r: r is not None and only(r)
    if not tests and policy_test is not None:
        pt = policy_test
        return True, lambda r: r is not None and pt(r)

    def combined(r: str | None) -> bool:
        if r is None:
            return False
        if tests and not any(t(r) for t in tests):
            return False
        return policy_test is None or policy_test(r)

    return True, combined


class PolicyIndex:
    """Policies compiled for fast evaluation. Immutable once built: a change of policies builds a new one."""

    def __init__(self, policies: Iterable[Policy], *, generation: int = 0) -> None:
        self.generation = generation
        self.policies: tuple[Policy, ...] = tuple(policies)
        compiled = [_Compiled(p) for p in self.policies]
        # Strongest effect first, then priority, then id: a matched list in this order is the explanation order.
        compiled.sort(key=lambda c: (-c.rank, -c.priority, c.id))
        self._compiled = compiled
        self._by_prefix: dict[str, list[_Compiled]] = {}
        self._wild: list[_Compiled] = []
        for c in compiled:
            firsts = {first for _, _, first in c.actions}
            if any("*" in f or "?" in f for f in firsts):
                self._wild.append(c)
            for f in firsts:
                if "*" not in f and "?" not in f:
                    self._by_prefix.setdefault(f, []).append(c)
        self._named_actors = frozenset(a for c in compiled for a in c.actors)
        self._candidates: dict[tuple[str, str | None, str | None], list[_Candidate]] = {}
        self._cache: dict[tuple[Any, ...], Decision] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.policies)

    def candidates(self, action: str, role: str | None, actor: str) -> list[_Candidate]:
        """Policies about this action and this actor/role, in explanation order (computed once per triple)."""
        named = actor if actor in self._named_actors else None
        key = (action, role, named)
        found = self._candidates.get(key)
        if found is not None:
            return found
        _check_action(action)
        pool = {id(c): c for c in self._by_prefix.get(action.split(".", 1)[0], ())}
        pool.update((id(c), c) for c in self._wild)
        out: list[_Candidate] = []
        for c in self._compiled:  # keeps the explanation order
            if id(c) not in pool or not c.about(actor, role):
                continue
            about, test = _resource_test(c, action)
            if about:
                entries = [e for e, (m, _, _) in zip(c.policy.actions, c.actions, strict=True) if m(action)]
                out.append((c, test, c.policy.summary(entries)))
        with self._lock:
            if len(self._candidates) >= _CANDIDATE_LIMIT:
                self._candidates.clear()
            self._candidates[key] = out
        return out

    def evaluate(
        self,
        actor: str,
        role: str | None,
        action: str,
        resource: str | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        cache: bool = True,
    ) -> Decision:
        """Decide one request against these policies (nothing is logged)."""
        if resource is None and ":" in action:
            action, resource = action.split(":", 1)
        if resource is not None and type(resource) is not str:
            raise PolicyError(f"a resource is a string, not {type(resource).__name__}")
        if context is not None and type(context) is not dict and not isinstance(context, Mapping):
            raise PolicyError(f"the context is a mapping of names to values, not {type(context).__name__}")
        key: tuple[Any, ...] | None = None
        if cache:
            if context:
                # The value types are part of the key: True == 1 for a dict, but not for a condition.
                key = (
                    actor,
                    role,
                    action,
                    resource,
                    tuple(context.items()),
                    tuple(map(type, context.values())),
                )
            else:
                key = (actor, role, action, resource)
            try:
                hit = self._cache.get(key)
            except TypeError:  # a list or dict in the context: not hashable, so not cached
                key = None
            else:
                if hit is not None:
                    return hit
        matched: list[tuple[_Compiled, str]] = []
        for c, test, reason in self.candidates(action, role, actor):
            if test is not None and not test(resource):
                continue
            check = c.check
            if check is not None and not check(context):
                continue
            matched.append((c, reason))
        decision = _decision(matched, actor, role, action, resource)
        if key is not None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = decision
        return decision

    def clear_cache(self) -> None:
        self._cache.clear()


def _decision(
    matched: list[tuple[_Compiled, str]], actor: str, role: str | None, action: str, resource: str | None
) -> Decision:
    if not matched:
        on = f" on {resource}" if resource is not None else ""
        return Decision(
            "deny",
            (),
            (
                f"no policy allows this (default deny): nothing allows {actor!r} (role: {role or 'none'}) "
                f"to {action}{on}",
            ),
        )
    top = matched[0][0]
    winners = [c for c, _ in matched if c.rank == top.rank]
    others = [c for c, _ in matched if c.rank != top.rank]
    reasons = [reason for c, reason in matched if c.rank == top.rank]
    overridden = _join([f"{c.id!r} ({c.effect})" for c in others])
    if top.effect == "allow":
        reasons.append("no deny or review policy matched")
    elif top.effect == "review":
        reasons.append("no deny policy matched")
        if others:
            reasons.append(f"review beats allow: {overridden} would allow it without the approval")
        reasons.append("it may proceed once an admin (not the requester) approves it")
    elif others:
        reasons.append(f"deny beats review and allow: {overridden} did not count")
    return Decision(
        top.effect,
        tuple(c.id for c in winners),
        tuple(reasons),
        None,
        tuple((c.id, c.effect) for c, _ in matched),
    )


# -- approvals -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Approval:
    """An approval request raised by a ``review`` decision, and its answer."""

    id: str
    state: str  # pending | approved | rejected
    requester: str
    role: str | None
    action: str
    resource: str | None
    context: dict[str, Any]
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    decision_id: str
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    note: str | None

    @property
    def pending(self) -> bool:
        return self.state == "pending"


_APPROVAL_COLUMNS = (
    "id, state, requester, role, action, resource, context, policy_ids, reasons, decision_id, requested_at, "
    "decided_by, decided_at, note"
)


def _approval(row: Sequence[Any]) -> Approval:
    (
        id_,
        state,
        requester,
        role,
        action,
        resource,
        context,
        policy_ids,
        reasons,
        decision_id,
        requested_at,
        decided_by,
        decided_at,
        note,
    ) = row
    return Approval(
        str(id_),
        str(state),
        str(requester),
        role,
        str(action),
        resource,
        json.loads(context),
        tuple(json.loads(policy_ids)),
        tuple(json.loads(reasons)),
        str(decision_id),
        requested_at,
        decided_by,
        decided_at,
        note,
    )


# -- the engine ----------------------------------------------------------------------------------------------
class Governance:
    """Policies, decisions and approvals of one workspace (``ws.governance``)."""

    def __init__(self, ws: Workspace) -> None:
        self._ws = ws
        self._lock = threading.RLock()
        self._generation = 1  # bumped whenever a policy event is applied or committed
        self._index = PolicyIndex((), generation=0)
        self._roles: dict[str, str | None] = {}
        self._roles_generation = 0
        self._approvals = threading.Condition()
        self._approvals_generation = 0
        ws.projections.register(
            "governance_policies", "governance.p*", self._apply_policies, tables=["policies"]
        )
        ws.projections.register(
            "governance_approvals", "governance.approval_*", _apply_approvals, tables=["approvals"]
        )
        # Runs in the committing thread after each durable batch, before the publisher returns: a policy
        # change is visible to the next decision, and a waiting require() wakes up when its approval lands.
        ws.ledger.add_commit_listener(self._on_commit)

    # -- projections and change tracking ---------------------------------------------------------------------
    def _apply_policies(self, con: Any, events: list[Event]) -> None:
        _apply_policies(con, events)
        # Replay applies events without commit listeners: mark the index stale here too.
        self._generation += 1

    def _on_commit(self, events: list[Event]) -> None:
        policies = approvals = roles = False
        for e in events:
            topic = e.topic
            if not topic.startswith(("governance.p", "governance.approval_decided", "auth.")):
                continue
            if topic.startswith("auth."):
                roles = True
            elif topic == "governance.approval_decided":
                approvals = True
            else:
                policies = True
        if policies:
            with self._lock:
                self._generation += 1
        if roles:
            with self._lock:
                self._roles_generation += 1
                self._roles = {}
        if approvals:
            with self._approvals:
                self._approvals_generation += 1
                self._approvals.notify_all()

    @property
    def index(self) -> PolicyIndex:
        """The current compiled policies (rebuilt from the ``policies`` table after any change)."""
        index = self._index
        if index.generation != self._generation:
            index = self._rebuild()
        return index

    def _rebuild(self) -> PolicyIndex:
        with self._lock:
            generation = self._generation
            if self._index.generation == generation:
                return self._index
            rows = (
                self._ws.ledger.reader()
                .execute(
                    "SELECT id, effect, actions, resources, roles, actors, conditions, priority, description "
                    "FROM policies ORDER BY id"
                )
                .fetchall()
            )
            policies = [
                Policy(
                    id=r[0],
                    effect=r[1],
                    actions=json.loads(r[2]),
                    resources=json.loads(r[3]),
                    roles=json.loads(r[4]),
                    actors=json.loads(r[5]),
                    conditions=json.loads(r[6]),
                    priority=int(r[7]),
                    description=r[8],
                )
                for r in rows
            ]
            self._index = PolicyIndex(policies, generation=generation)
            return self._index

    # -- roles -----------------------------------------------------------------------------------------------
    def role_of(self, actor: str) -> str | None:
        """The actor's role, from ``ws.auth`` (remembered until the next auth event commits)."""
        roles = self._roles
        try:
            return roles[actor]
        except (KeyError, TypeError):
            pass
        generation = self._roles_generation
        lookup = getattr(self._ws.auth, "role_of", None)
        role = lookup(actor) if lookup is not None else None
        with self._lock:
            # An auth event that committed during the lookup may have changed the answer: do not keep it.
            if generation == self._roles_generation and len(self._roles) < 10_000 and isinstance(actor, str):
                self._roles[actor] = role
        return role

    # -- deciding --------------------------------------------------------------------------------------------
    def evaluate(
        self,
        actor: str,
        action: str,
        resource: str | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        role: str | None = _LOOKUP,
        cache: bool = True,
    ) -> Decision:
        """The decision for a request, without logging it (a what-if). ``role`` overrides the actor's role."""
        if role is _LOOKUP:
            role = self.role_of(actor)
        index = self._index
        if index.generation != self._generation:
            index = self._rebuild()
        return index.evaluate(actor, role, action, resource, context, cache=cache)

    def decide(
        self,
        actor: str,
        action: str,
        resource: str | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Decide a request and log the decision (a ``governance.decision`` event by ``actor``).

        A ``review`` decision also raises an approval request (or returns the pending one for the very same
        request) and carries its id in ``approval_id``.
        """
        action, resource, ctx = _request(action, resource, context)
        role = self.role_of(actor)
        decision = self.evaluate(actor, action, resource, ctx, role=role)
        return self._log(actor, role, action, resource, ctx, decision)

    def require(
        self,
        actor: str,
        action: str,
        resource: str | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        wait: float | None = None,
        approval_id: str | None = None,
    ) -> Decision:
        """Decide and enforce: return the (allowing) decision, or raise PermissionDenied.

        On ``review`` it waits up to ``wait`` seconds for an admin's answer (live workspaces only; in a
        deterministic one it checks once), proceeds when approved, and raises when rejected or still pending:
        the message names the approval, so the caller can retry later with ``approval_id=``.
        """
        action, resource, ctx = _request(action, resource, context)
        role = self.role_of(actor)
        if approval_id is None:
            decision = self.decide(actor, action, resource, ctx)
            if decision.effect == "allow":
                return decision
            if decision.effect == "deny":
                raise PermissionDenied(_refused(actor, action, resource, decision), decision=decision)
            approval_id = decision.approval_id
            assert approval_id is not None
        else:
            approval = self.approval(approval_id)
            _same_request(approval, actor, action, resource, ctx)
            decision = self.evaluate(actor, action, resource, ctx, role=role)
            if decision.effect != "review":  # the policies changed since: the new answer stands
                decision = self._log(actor, role, action, resource, ctx, decision)
                if decision.effect == "deny":
                    raise PermissionDenied(_refused(actor, action, resource, decision), decision=decision)
                return decision
        approval = self.wait(approval_id, wait)
        if approval.state == "pending":
            waited = f" after waiting {wait:g} s" if wait and self._ws.live else ""
            raise PermissionDenied(
                f"{actor} may not {action}{_on(resource)} yet: it needs an admin's approval, and approval "
                f"{approval_id} is still pending{waited}. Retry later with require(..., approval_id="
                f"{approval_id!r}) or governance.wait({approval_id!r}, timeout)",
                decision=replace(decision, approval_id=approval_id),
            )
        note = f" ({approval.note})" if approval.note else ""
        if approval.state == "approved":
            final = Decision(
                "allow",
                decision.policy_ids,
                (
                    *decision.reasons[:-1],
                    f"approval {approval_id} was granted by {approval.decided_by}{note}",
                ),
                approval_id,
                decision.matched,
            )
            return self._log(actor, role, action, resource, ctx, final)
        final = Decision(
            "deny",
            decision.policy_ids,
            (*decision.reasons[:-1], f"approval {approval_id} was rejected by {approval.decided_by}{note}"),
            approval_id,
            decision.matched,
        )
        self._log(actor, role, action, resource, ctx, final)
        raise PermissionDenied(_refused(actor, action, resource, final), decision=final)

    def _log(
        self,
        actor: str,
        role: str | None,
        action: str,
        resource: str | None,
        context: dict[str, Any],
        decision: Decision,
    ) -> Decision:
        payload = {
            "action": action,
            "resource": resource,
            "context": context,
            "role": role,
            "effect": decision.effect,
            "policy_ids": list(decision.policy_ids),
            "reasons": list(decision.reasons),
            "matched": [list(m) for m in decision.matched],
            "approval_id": decision.approval_id,
        }
        if decision.effect == "review" and decision.approval_id is None:
            # The same request asked again while its approval is pending: point at that one, not a new one.
            pending = self._pending_for(actor, action, resource, context)
            if pending is not None:
                decision = replace(decision, approval_id=pending)
                payload["approval_id"] = pending
        event = self._ws.publish("governance.decision", payload, actor=actor, resource=resource)
        if decision.effect != "review" or decision.approval_id is not None:
            return decision
        with handling(event):
            request = self._ws.publish(
                "governance.approval_requested",
                {
                    "decision_id": event.id,
                    "role": role,
                    "action": action,
                    "resource": resource,
                    "context": context,
                    "policy_ids": list(decision.policy_ids),
                    "reasons": list(decision.reasons),
                },
                actor=actor,
                resource=resource,
            )
        return replace(decision, approval_id=request.id)

    def _pending_for(
        self, actor: str, action: str, resource: str | None, context: dict[str, Any]
    ) -> str | None:
        row = (
            self._ws.ledger.reader()
            .execute(
                "SELECT id FROM approvals WHERE state = 'pending' AND requester = ? AND action = ? "
                "AND resource IS NOT DISTINCT FROM ? AND context = ? ORDER BY requested_at LIMIT 1",
                [actor, action, resource, canonical_json(context)],
            )
            .fetchone()
        )
        return None if row is None else str(row[0])

    # -- approvals -------------------------------------------------------------------------------------------
    def approval(self, approval_id: str) -> Approval:
        row = (
            self._ws.ledger.reader()
            .execute(f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE id = ?", [approval_id])
            .fetchone()
        )
        if row is None:
            raise PolicyError(f"no approval with id {approval_id!r}")
        return _approval(row)

    def approvals(self, state: str | None = None) -> pd.DataFrame:
        """Approval requests, oldest first (``state``: pending, approved or rejected)."""
        sql, params = f"SELECT {_APPROVAL_COLUMNS} FROM approvals", []
        if state is not None:
            if state not in ("pending", "approved", "rejected"):
                raise PolicyError(f"unknown approval state {state!r}; states: pending, approved, rejected")
            sql += " WHERE state = ?"
            params.append(state)
        return self._ws.sql(sql + " ORDER BY requested_at, id", params)

    def approve(self, approval_id: str, *, by: str, note: str = "") -> Approval:
        """Approve a pending request (admins and the system only, never the requester themself)."""
        return self._answer(approval_id, "approved", by=by, note=note)

    def reject(self, approval_id: str, *, by: str, note: str = "") -> Approval:
        """Reject a pending request (admins and the system only, never the requester themself)."""
        return self._answer(approval_id, "rejected", by=by, note=note)

    def _answer(self, approval_id: str, state: str, *, by: str, note: str) -> Approval:
        if not isinstance(note, str) or len(note) > 2000:
            raise PolicyError("a note is text of at most 2000 characters")
        role = self.role_of(by)
        if role not in APPROVER_ROLES:
            raise PermissionDenied(
                f"{by!r} (role: {role or 'none'}) may not decide approvals: only admins and the system can"
            )
        approval = self.approval(approval_id)
        if approval.requester == by:
            raise PermissionDenied(f"{by!r} asked for approval {approval_id}; someone else must decide it")
        if approval.state != "pending":
            raise PolicyError(
                f"approval {approval_id} is {approval.state} already (by {approval.decided_by})"
            )
        self._ws.publish(
            "governance.approval_decided",
            {"approval_id": approval_id, "state": state, "note": note},
            actor=by,
            resource=f"approval:{approval_id}",
        )
        return self.approval(approval_id)

    def wait(self, approval_id: str, timeout: float | None = None) -> Approval:
        """The approval once decided, or as it stands after ``timeout`` seconds.

        Waits only in a live workspace; in a deterministic one (and with ``timeout`` None or 0) it checks once.
        """
        approval = self.approval(approval_id)
        if not approval.pending or not timeout or not self._ws.live:
            return approval
        deadline = time.monotonic() + timeout
        while True:
            with self._approvals:
                seen = self._approvals_generation
            approval = self.approval(approval_id)
            remaining = deadline - time.monotonic()
            if not approval.pending or remaining <= 0:
                return approval
            with self._approvals:
                if self._approvals_generation == seen:
                    # Woken by the commit of any approval_decided event; the cap is only a safety net.
                    self._approvals.wait(min(remaining, 1.0))

    # -- policies --------------------------------------------------------------------------------------------
    def policies(self) -> pd.DataFrame:
        """The policies as a DataFrame (list columns parsed), strongest effect and highest priority first."""
        df = self._ws.sql(
            "SELECT id, effect, priority, roles, actors, actions, resources, conditions, description, source, "
            "version, updated_by, updated_at FROM policies "
            "ORDER BY CASE effect WHEN 'deny' THEN 0 WHEN 'review' THEN 1 ELSE 2 END, priority DESC, id"
        )
        for column in ("roles", "actors", "actions", "resources", "conditions"):
            df[column] = df[column].map(json.loads)
        return df

    def policy(self, policy_id: str) -> Policy:
        for p in self.index.policies:
            if p.id == policy_id:
                return p
        raise PolicyError(f"no policy with id {policy_id!r}")

    def add_policy(self, policy: Policy | Mapping[str, Any], *, actor: str, reason: str = "") -> Policy:
        """Add a new policy (a ``governance.policy_added`` event); ``actor`` must be allowed to."""
        return self.add_policies([policy], actor=actor, reason=reason)[0]

    def update_policy(self, policy: Policy | Mapping[str, Any], *, actor: str, reason: str = "") -> Policy:
        """Replace an existing policy with the same id (a ``governance.policy_updated`` event)."""
        built = policy if isinstance(policy, Policy) else Policy.from_dict(policy)
        self.policy(built.id)  # a clear error for an unknown id: updating is not adding
        return self.add_policies([built], actor=actor, reason=reason, replace=True)[0]

    def add_policies(
        self,
        policies: Iterable[Policy | Mapping[str, Any]],
        *,
        actor: str,
        reason: str = "",
        replace: bool = False,
    ) -> list[Policy]:
        """Add several policies in one transaction (all or none). With ``replace``, existing ids are updated
        (``policy_updated``) and new ones added; without it an existing id is an error."""
        built = load_policies([p if isinstance(p, Policy) else dict(p) for p in policies])
        existing = {p.id for p in self.index.policies}
        if not replace:
            clash = [p.id for p in built if p.id in existing]
            if clash:
                raise PolicyError(
                    f"policy {', '.join(clash)} exists already; update it (update_policy, "
                    "`grace policy add --replace`) or remove it first"
                )
        messages = []
        for p in built:
            verb = "update" if p.id in existing else "add"
            self.require(actor, f"governance.policy.{verb}", f"policy:{p.id}")
            topic = "governance.policy_updated" if verb == "update" else "governance.policy_added"
            messages.append(Message(topic, {"policy": p.as_dict(), "reason": reason}, f"policy:{p.id}"))
        if messages:
            self._ws.publish_many(messages, actor=actor)
        return built

    def remove_policy(self, policy_id: str, *, actor: str, reason: str = "") -> None:
        """Remove a policy (a ``governance.policy_removed`` event); ``actor`` must be allowed to."""
        self.policy(policy_id)  # a clear error for an unknown id
        self.require(actor, "governance.policy.remove", f"policy:{policy_id}")
        self._ws.publish(
            "governance.policy_removed",
            {"id": policy_id, "reason": reason},
            actor=actor,
            resource=f"policy:{policy_id}",
        )

    def load_pack(self, policies: Iterable[Policy], *, name: str, actor: str = "governance") -> Event:
        """Load a whole pack in one ``governance.pack_loaded`` event (its policies replace same-id ones)."""
        built = load_policies(list(policies))
        return self._ws.publish(
            "governance.pack_loaded",
            {"name": name, "policies": [p.as_dict() for p in built]},
            actor=actor,
            resource=f"policy-pack:{name}",
        )

    def seed_defaults(self) -> None:
        """Load the default pack into a new workspace: exactly one ``governance.pack_loaded`` event.

        Does nothing when the workspace has loaded a pack already (so calling it twice is harmless).
        """
        loaded = (
            self._ws.ledger.reader()
            .execute("SELECT count(*) FROM events WHERE topic = 'governance.pack_loaded'")
            .fetchone()
        )
        if loaded and loaded[0]:
            return
        self.load_pack(default_pack(), name=DEFAULT_PACK)


# -- helpers -------------------------------------------------------------------------------------------------
def _on(resource: str | None) -> str:
    return "" if resource is None else f" on {resource}"


def _refused(actor: str, action: str, resource: str | None, decision: Decision) -> str:
    return f"{actor} may not {action}{_on(resource)}: {decision.explanation}"


def _request(
    action: str, resource: str | None, context: Mapping[str, Any] | None
) -> tuple[str, str | None, dict[str, Any]]:
    """Normalise and check a request that is going to be logged."""
    if not isinstance(action, str):
        raise PolicyError(f"an action is a string like 'memory.write', not {action!r}")
    if resource is None and ":" in action:
        action, resource = action.split(":", 1)
    _check_action(action)
    _check_resource(resource)
    if context is None:
        ctx: dict[str, Any] = {}
    elif isinstance(context, Mapping):
        ctx = dict(context)
    else:
        raise PolicyError(f"the context is a mapping of names to values, not {type(context).__name__}")
    try:
        canonical_json(ctx, limit=64 * 1024)
    except EventError as exc:
        raise PolicyError(f"the context cannot be logged: {exc}") from exc
    return action, resource, ctx


def _same_request(
    approval: Approval, actor: str, action: str, resource: str | None, context: dict[str, Any]
) -> None:
    asked = (approval.requester, approval.action, approval.resource, canonical_json(approval.context))
    now = (actor, action, resource, canonical_json(context))
    if asked != now:
        raise PermissionDenied(
            f"approval {approval.id} was given for {approval.requester} to {approval.action}"
            f"{_on(approval.resource)} with context {canonical_json(approval.context)}, not for this request"
        )


def _json(value: Any) -> str:
    """Canonical JSON of a list (sorted keys, no spaces), as stored in the list columns."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _policy_row(con: Any, policy: Mapping[str, Any], e: Event, source: str, version: int) -> None:
    con.execute(
        "INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, make_timestamptz(?::BIGINT), ?)",
        [
            policy["id"],
            policy["effect"],
            policy["priority"],
            _json(policy["actions"]),
            _json(policy["resources"]),
            _json(policy["roles"]),
            _json(policy["actors"]),
            _json(policy["conditions"]),
            policy["description"],
            source,
            version,
            e.actor,
            e.ts_us,
            e.id,
        ],
    )


def _apply_policies(con: Any, events: list[Event]) -> None:
    """Projection: ``policies`` from pack, add, update and remove events (ids kept unique by hand)."""
    for e in events:
        p = e.payload
        if e.topic == "governance.pack_loaded":
            for policy in p["policies"]:
                old = con.execute("SELECT version FROM policies WHERE id = ?", [policy["id"]]).fetchone()
                con.execute("DELETE FROM policies WHERE id = ?", [policy["id"]])
                _policy_row(con, policy, e, f"pack:{p['name']}", 1 if old is None else int(old[0]) + 1)
        elif e.topic in ("governance.policy_added", "governance.policy_updated"):
            policy = p["policy"]
            old = con.execute("SELECT version, source FROM policies WHERE id = ?", [policy["id"]]).fetchone()
            con.execute("DELETE FROM policies WHERE id = ?", [policy["id"]])
            version, source = (1, "user") if old is None else (int(old[0]) + 1, str(old[1]))
            _policy_row(con, policy, e, source, version)
        elif e.topic == "governance.policy_removed":
            con.execute("DELETE FROM policies WHERE id = ?", [p["id"]])


def _apply_approvals(con: Any, events: list[Event]) -> None:
    """Projection: ``approvals`` from requests and answers (only the first answer to a request counts)."""
    for e in events:
        p = e.payload
        if e.topic == "governance.approval_requested":
            con.execute(
                "INSERT INTO approvals VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, make_timestamptz(?::BIGINT), "
                "NULL, NULL, NULL)",
                [
                    e.id,
                    e.actor,
                    p["role"],
                    p["action"],
                    p["resource"],
                    canonical_json(p["context"]),
                    _json(p["policy_ids"]),
                    _json(p["reasons"]),
                    p["decision_id"],
                    e.ts_us,
                ],
            )
        elif e.topic == "governance.approval_decided":
            con.execute(
                "UPDATE approvals SET state = ?, decided_by = ?, decided_at = make_timestamptz(?::BIGINT), note = ? "
                "WHERE id = ? AND state = 'pending'",
                [p["state"], e.actor, e.ts_us, p["note"], p["approval_id"]],
            )
