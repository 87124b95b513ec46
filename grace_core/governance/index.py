"""The decision index: policies compiled once, decisions explained and cached.

**Decisions.** Deny beats review, review beats allow, and nothing matching means deny (default deny). Priority
never overrides an effect: it only orders the policies within an effect (and so the explanation). Every
decision says which policies matched and why. Decisions come from an in-memory index rebuilt whenever a policy
event commits: policies are grouped by the first segment of their action globs, globs are compiled once, the
candidates of an (action, role) pair are computed once, and whole decisions are cached per identical request
(the cache goes with the index).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from grace_core.errors import PolicyError

from .policy import EFFECTS, Policy, _check_action, _compile_globs, _join, compile_glob

__all__ = ["Decision", "PolicyIndex"]

_RANK = {effect: rank for rank, effect in enumerate(EFFECTS)}
_CACHE_LIMIT = 65_536  # cached decisions per index; the cache is emptied when full
_CANDIDATE_LIMIT = 16_384


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
