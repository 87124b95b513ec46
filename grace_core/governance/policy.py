"""The policy language: globs, conditions, policies, and the default pack.

**Policies are data.** A policy is a row of the ``policies`` table, a projection of ``governance.policy_added``,
``.policy_updated``, ``.policy_removed``, ``governance.pack_loaded`` and ``governance.policies_reset`` events; a
new workspace loads the default pack (``grace_core/data/policies.yaml``) in one ``governance.pack_loaded`` event
at genesis. A policy has:

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
"""

from __future__ import annotations

import importlib.resources
import json
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from grace_core.errors import PolicyError

__all__ = [
    "DEFAULT_PACK",
    "EFFECTS",
    "OPS",
    "POLICY_FIELDS",
    "ROLES",
    "Condition",
    "Policy",
    "compile_glob",
    "default_pack",
    "glob_regex",
    "load_policies",
]

EFFECTS = ("allow", "review", "deny")  # weakest first: the strongest effect that matches wins
OPS = ("eq", "ne", "in", "not_in", "lt", "le", "gt", "ge", "exists", "matches")
ROLES = ("admin", "researcher", "viewer", "system")
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
_MISSING: Any = object()
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


def _json(value: Any) -> str:
    """Canonical JSON of a list (sorted keys, no spaces), as stored in the list columns."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
