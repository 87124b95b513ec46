"""Benchmarks of governance decisions against pycasbin and cedarpy on the same policies."""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from grace_core.bench.core import (
    REPEATS,
    Context,
    Figure,
    Goal,
    _best_rate,
    _percentile,
    _timed,
    benchmark,
    figure,
)
from grace_core.errors import BenchError

# -- governance ----------------------------------------------------------------------------------------------
# ``governance.decide``: decisions/s of ``Governance.check`` as a what-if (``record="none"``) over a
# mix of requests against the default pack, decision cache off, against pycasbin on the same policies
# (RBAC: role links ``g``, ``globMatch`` over actions and resources, an allow-and-deny effect, the request
# context checked by a registered function) and against cedarpy (the same policies in Cedar, parsed once).
# Every engine resolves roles in memory (ours from a dict, casbin through ``g``, Cedar through entity parents)
# and must give the same effect as ours on every request of the mix (tests/test_governance.py checks it).
# ``governance.decide_cached`` repeats a working set of requests with the decision cache on.
# Goals: >= 100,000 decisions/s and p99 <= 50 us (uncached).
GOALS = (  # beside the benchmark below
    Goal("governance.decide", 100_000, text="governance decisions >= 100,000/s (uncached evaluation)"),
    Goal("governance.decide_p99_us", 50, text="governance decision p99 <= 50 us (uncached evaluation)"),
)

GOVERNANCE_ROLES: dict[str, str] = {
    "ada": "admin",
    "rita": "researcher",
    "raj": "researcher",
    "vic": "viewer",
    "hunter": "system",
    "meta": "system",
    "executor": "system",
}
_GOVERNANCE_ACTORS = [*GOVERNANCE_ROLES, "zed"]  # zed has no account: default deny

Request = tuple[str, str, "str | None", "dict[str, Any] | None"]  # actor, action, resource, context


def governance_mix(n: int, *, seed: int = 0, distinct: int | None = None) -> list[Request]:
    """``n`` requests like a busy workspace makes them: chat, memory reads and writes (some under /system),
    sandbox runs with and without network and of varied length, loop steps and retunes, deployments, tasks,
    policy changes, reads; actors of every role and one unknown. With ``distinct``, the requests are drawn
    from a working set of that many (what a decision cache sees)."""
    rng = random.Random(seed)  # noqa: S311 - a benchmark's workload, not secrets
    if distinct is not None:
        pool = governance_mix(distinct, seed=seed)
        return [rng.choice(pool) for _ in range(n)]
    out: list[Request] = []
    context: dict[str, Any] | None
    for _ in range(n):
        actor = rng.choice(_GOVERNANCE_ACTORS)
        kind = rng.random()
        if kind < 0.20:
            out.append(
                (actor, "chat.send", f"conversation:{rng.randrange(500)}", {"length": rng.randrange(2000)})
            )
        elif kind < 0.38:
            path = f"/projects/p{rng.randrange(50)}/notes-{rng.randrange(100)}.md"
            out.append((actor, rng.choice(["memory.read", "memory.list", "memory.search"]), path, None))
        elif kind < 0.52:
            path = (
                f"/system/prompts/p{rng.randrange(10)}.md"
                if rng.random() < 0.3
                else f"/projects/p{rng.randrange(50)}/notes-{rng.randrange(100)}.md"
            )
            out.append(
                (actor, rng.choice(["memory.write", "memory.delete"]), path, {"bytes": rng.randrange(10_000)})
            )
        elif kind < 0.66:
            context = {"network": rng.random() < 0.15, "timeout_s": rng.choice([5, 30, 60, 120, 600, 1800])}
            out.append((actor, "sandbox.execute", None, context))
        elif kind < 0.74:
            loop = rng.choice(["reflection", "learning", "healing"])
            action = rng.choice(["loop.step", "loop.read", "loop.set_param"])
            context = (
                {"key": "interval", "value": rng.randrange(1, 120)} if action == "loop.set_param" else None
            )
            out.append((actor, action, f"loop:{loop}", context))
        elif kind < 0.80:
            context = {"target": rng.choice(["staging", "production"])}
            out.append(
                (actor, rng.choice(["model.deploy", "model.read"]), f"model:m{rng.randrange(10)}", context)
            )
        elif kind < 0.90:
            action = rng.choice(["task.create", "task.read", "task.update", "task.cancel"])
            out.append((actor, action, f"task:{rng.randrange(10_000)}", None))
        elif kind < 0.94:
            verb = rng.choice(["add", "update", "remove"])
            out.append((actor, f"governance.policy.{verb}", f"policy:p{rng.randrange(20)}", None))
        else:
            action = rng.choice(
                ["ledger.read", "metrics.read", "governance.read", "hunter.read", "ledger.checkpoint"]
            )
            out.append((actor, action, None, None))
    return out


# pycasbin: one line per (subject, action entry, resource); denies first, then reviews (written as denies and
# told apart by their pid), then allows. The allow-and-deny effect stops at the first matching deny, so the
# matching line it explains is a real deny whenever one matches, else a review.
CASBIN_MODEL = """
[request_definition]
r = sub, obj, act, ctx

[policy_definition]
p = sub, obj, act, cond, eft, pid

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = (p.sub == "*" || g(r.sub, p.sub)) && globMatch(r.act, p.act) && (p.obj == "any" || globMatch(r.obj, p.obj)) \
&& (p.cond == "" || ctxMatch(r.ctx, p.cond))
"""


def casbin_enforcer(policies: Sequence[Any], roles: dict[str, str]) -> Any:
    """A pycasbin enforcer holding ``policies`` (governance Policy objects) and the role links ``roles``."""
    import casbin

    from grace_core.governance import Condition

    compiled: dict[str, Callable[[Any], bool]] = {}

    def ctx_match(context: Any, cond: str) -> bool:
        test = compiled.get(cond)
        if test is None:
            tests = [Condition.from_dict(c).compile() for c in json.loads(cond)]
            test = compiled[cond] = lambda ctx: all(t(ctx) for t in tests)
        return test(context)

    enforcer = casbin.Enforcer(casbin.Enforcer.new_model(text=CASBIN_MODEL))
    enforcer.add_function("ctxMatch", ctx_match)
    rows: list[list[str]] = []
    order = {"deny": 0, "review": 1, "allow": 2}
    for p in sorted(policies, key=lambda p: (order[p.effect], -p.priority, p.id)):
        if "*" in p.roles:
            raise BenchError(f"{p.id}: role '*' has no casbin translation here")
        subjects = [*p.roles, *p.actors]
        cond = json.dumps([c.as_dict() for c in p.conditions]) if p.conditions else ""
        eft = "allow" if p.effect == "allow" else "deny"
        for entry in p.actions:
            action, sep, entry_resource = entry.partition(":")
            if sep and p.resources:
                raise BenchError(
                    f"{p.id}: an action:resource entry and resources together have no translation"
                )
            objects = [entry_resource] if sep else list(p.resources) or ["any"]
            for sub in subjects:
                for obj in objects:
                    rows.append([sub, obj, action, cond, eft, f"{p.effect}:{p.id}"])
    enforcer.add_policies(rows)
    enforcer.add_grouping_policies([[actor, role] for actor, role in roles.items()])
    return enforcer


def casbin_effect(enforcer: Any, actor: str, action: str, resource: str | None, context: Any) -> str:
    ok, explain = enforcer.enforce_ex(actor, resource or "", action, context or {})
    if ok:
        return "allow"
    return "review" if explain and explain[-1].startswith("review:") else "deny"


def _cedar_like(glob: str, attr: str) -> str:
    """A glob as a Cedar condition on ``attr`` (``like`` has one wildcard, ``*``, which crosses separators)."""
    if "?" in glob:
        raise BenchError(f"{glob!r}: Cedar's like has no single-character wildcard")
    if glob == "**":
        return "true"
    if "*" not in glob:
        return f"{attr} == {json.dumps(glob)}"
    for sep in "/.":
        if glob.endswith(sep + "**"):  # 'a/**' also matches 'a' itself
            base = glob[: -len(sep) - 2]
            if "*" not in base:
                return f"({attr} == {json.dumps(base)} || {attr} like {json.dumps(base + sep + '*')})"
    return f"{attr} like {json.dumps(glob.replace('**', '*'))}"


def _cedar_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise BenchError(f"{value!r}: no Cedar literal in this translation")


def _cedar_condition(c: Any) -> str:
    parts = c.key.split(".")
    path = "context.ctx"
    has = []
    for part in parts:
        has.append(f"{path} has {part}")
        path = f"{path}.{part}"
    present = " && ".join(has)
    if c.op == "exists":
        return f"({present})" if c.value else f"!({present})"
    if c.op in ("in", "not_in"):
        test = f"[{', '.join(_cedar_value(v) for v in c.value)}].contains({path})"
        test = test if c.op == "in" else f"!{test}"
    else:
        symbol = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}.get(c.op)
        if symbol is None or (symbol in ("<", "<=", ">", ">=") and not isinstance(c.value, int)):
            raise BenchError(f"condition {c.text()}: no Cedar translation here")
        test = f"{path} {symbol} {_cedar_value(c.value)}"
    return f"({present} && {test})"


def cedar_policies(policies: Sequence[Any]) -> str:
    """The policies in Cedar: deny as forbid, allow and review as permit (told apart by their @id)."""
    out = []
    for p in policies:
        who = [f'principal in Role::"{r}"' for r in p.roles if r != "*"]
        who += ["true" if a == "*" else f"principal == User::{json.dumps(a)}" for a in p.actors]
        acts = []
        for entry in p.actions:
            action, sep, entry_resource = entry.partition(":")
            test = _cedar_like(action, "context.act")
            if sep:
                test = f"({test} && {_cedar_like(entry_resource, 'context.res')})"
            acts.append(test)
        clauses = [f"({' || '.join(who)})", f"({' || '.join(acts)})"]
        if p.resources:
            clauses.append(f"({' || '.join(_cedar_like(r, 'context.res') for r in p.resources)})")
        clauses += [_cedar_condition(c) for c in p.conditions]
        kind = "forbid" if p.effect == "deny" else "permit"
        out.append(
            f'@id("{p.effect}:{p.id}")\n{kind} (principal, action, resource)\nwhen {{ {" && ".join(clauses)} }};'
        )
    return "\n\n".join(out)


def cedar_entities(roles: dict[str, str]) -> list[dict[str, Any]]:
    users = [
        {"uid": {"type": "User", "id": actor}, "attrs": {}, "parents": [{"type": "Role", "id": role}]}
        for actor, role in roles.items()
    ]
    return users + [
        {"uid": {"type": "Role", "id": r}, "attrs": {}, "parents": []} for r in sorted(set(roles.values()))
    ]


def cedar_request(actor: str, action: str, resource: str | None, context: Any) -> dict[str, Any]:
    return {
        "principal": f"User::{json.dumps(actor)}",
        "action": 'Action::"request"',
        "resource": 'Resource::"request"',
        "context": {"act": action, "res": resource or "", "ctx": context or {}},
    }


def cedar_effect(result: Any) -> str:
    ids = list(result.diagnostics.id_annotations_by_reason.values())
    if result.allowed:
        return "review" if any(i.startswith("review:") for i in ids) else "allow"
    return "deny"


def _governance_figures() -> list[str]:
    import importlib.util

    names = []
    if importlib.util.find_spec("casbin") is not None:
        names += ["governance.decide", "governance.decide_cached", "governance.decide_p99_us"]
    if importlib.util.find_spec("cedarpy") is not None:
        names.append("governance.decide_vs_cedar")
    return names


@benchmark("governance.decide", figures=_governance_figures(), goals=GOALS)
def bench_governance(ctx: Context) -> Iterator[Figure]:
    """Governance decisions over the request mix, on the default pack, against pycasbin and cedarpy."""
    import importlib.util

    from grace_core.governance import default_pack

    ws = ctx.simulated_workspace(seed=0)
    ws.governance.seed_defaults()
    check = ws.governance.check  # as a what-if (record="none"): the decision without its event
    policies = default_pack()
    roles = GOVERNANCE_ROLES
    n = ctx.size(200_000, 20_000, minimum=50)
    mix = governance_mix(n, seed=1)
    hot = governance_mix(n, seed=2, distinct=max(10, n // 100))

    def ours_pass(requests: list[Request], cache: bool) -> None:
        get = roles.get
        for actor, action, resource, context in requests:
            check(
                actor,
                action,
                resource,
                context,
                record="none",
                enforce=False,
                role=get(actor),
                cache=cache,
            )

    ours_pass(mix[:1000], False)  # warm up: candidate lists per (action, role)
    uncached = _best_rate(n, [_timed(functools.partial(ours_pass, mix, False))[0] for _ in range(REPEATS)])
    ours_pass(hot, True)
    cached = _best_rate(n, [_timed(functools.partial(ours_pass, hot, True))[0] for _ in range(REPEATS)])
    clock = time.perf_counter
    latencies = []
    for actor, action, resource, context in mix:
        role = roles.get(actor)
        started = clock()
        check(actor, action, resource, context, record="none", enforce=False, role=role, cache=False)
        latencies.append(clock() - started)
    latencies.sort()
    p99 = _percentile(latencies, 99) * 1e6

    if importlib.util.find_spec("casbin") is not None:
        enforcer = casbin_enforcer(policies, roles)
        m = ctx.size(3_000, 600, minimum=20)
        sample = mix[:m]
        peer_latencies = []
        for actor, action, resource, context in sample:
            started = clock()
            casbin_effect(enforcer, actor, action, resource, context)
            peer_latencies.append(clock() - started)
        peer_rate = m / sum(peer_latencies)
        peer_latencies.sort()
        yield figure("governance.decide", uncached, "decisions/s", "pycasbin.enforce_ex", peer_rate)
        yield figure("governance.decide_cached", cached, "decisions/s", "pycasbin.enforce_ex", peer_rate)
        yield figure(
            "governance.decide_p99_us",
            p99,
            "us",
            "pycasbin.enforce_ex",
            _percentile(peer_latencies, 99) * 1e6,
        )
    if importlib.util.find_spec("cedarpy") is not None:
        import cedarpy

        policy_set = cedarpy.PolicySet.from_str(cedar_policies(policies))
        entities = cedarpy.Entities.from_json_str(json.dumps(cedar_entities(roles)))
        k = ctx.size(20_000, 2_000, minimum=20)
        requests = [cedar_request(*r) for r in mix[:k]]

        def cedar_pass() -> None:
            cedarpy.is_authorized_batch(requests, policy_set, entities)

        cedar_pass()
        cedar_rate = _best_rate(k, [_timed(cedar_pass)[0] for _ in range(REPEATS)])
        yield figure(
            "governance.decide_vs_cedar",
            uncached,
            "decisions/s",
            "cedarpy.is_authorized_batch",
            cedar_rate,
        )
