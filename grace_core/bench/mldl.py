"""Benchmarks of models: the injection classifier against the rules alone, and its cost per scan."""

from __future__ import annotations

import functools
from collections.abc import Iterator

from grace_core.bench.core import Context, Figure, _percentile, _timed, benchmark, figure


# -- mldl ------------------------------------------------------------------------------------------------------
# ``mldl.injection_f1``: F1 of the prompt-injection classifier (trained through ``ws.mldl.train`` on
# ``make_dataset(n, seed=7)``) on a dataset it never saw (another seed), against Hunter's injection rules alone
# (the default pack's ``injection`` rules, target chat) on the same texts: what the model adds beside the rules.
# ``mldl.scan_ms``: the median time of ``ws.hunter.scan`` of one chat message with the classifier deployed as
# champion, against the same scan with no champion (the rules only): what the model costs per message.
@benchmark("mldl.injection", figures=["mldl.injection_f1", "mldl.scan_ms"])
def bench_mldl(ctx: Context) -> Iterator[Figure]:
    """The injection classifier against Hunter's rules: F1 on unseen data, and its cost per chat scan."""
    from grace_core.mldl import INJECTION_MODEL, make_dataset

    ws = ctx.simulated_workspace(seed=7)
    train = make_dataset(ctx.size(2000, 600, minimum=100), seed=7)
    unseen = make_dataset(ctx.size(1000, 300, minimum=100), seed=8)
    texts = list(unseen["text"])
    truth = unseen["label"].to_numpy() == 1

    def f1(flags: list[bool]) -> float:
        tp = sum(f and t for f, t in zip(flags, truth, strict=True))
        return 2 * int(tp) / (sum(flags) + int(truth.sum()))

    # A new workspace has the shipped model as champion: the baseline is the rules alone.
    ws.mldl.undeploy(INJECTION_MODEL, actor="system")
    rules = [any(f.category == "injection" for f in ws.hunter.scan(t, target="chat")) for t in texts]
    rules_times = sorted(_timed(functools.partial(ws.hunter.scan, t, target="chat"))[0] for t in texts[:200])
    run = ws.mldl.train(INJECTION_MODEL, "injection", train, params={"steps": 1}, seed=7, actor="system")
    ws.mldl.deploy(INJECTION_MODEL, ws.mldl.register(run).version, actor="system")
    ours = [any(f.category == "injection" for f in ws.hunter.scan(t, target="chat")) for t in texts]
    model_times = sorted(_timed(functools.partial(ws.hunter.scan, t, target="chat"))[0] for t in texts[:200])
    yield figure("mldl.injection_f1", f1(ours), "F1", "hunter.injection_rules", f1(rules))
    yield figure(
        "mldl.scan_ms",
        _percentile(model_times, 50) * 1e3,
        "ms",
        "hunter.scan_rules_only",
        _percentile(rules_times, 50) * 1e3,
    )
