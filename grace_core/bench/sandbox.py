"""Benchmarks of the sandbox: isolation overhead over a bare interpreter, and a whole governed run."""

from __future__ import annotations

from collections.abc import Iterator

from grace_core.bench.core import Context, Figure, Goal, _timed, benchmark, figure

# -- sandbox -------------------------------------------------------------------------------------------------
# ``sandbox.isolated_run_p50_ms``: one trivial program (``pass``) run under every isolation layer the machine
# offers (bubblewrap namespaces, uid drop, seccomp, rlimits, cgroup, scrubbed env, throwaway /work), output
# captured, cgroup removed — the median over many runs. The peer is a bare ``python -c pass`` subprocess of
# the same interpreter (``subprocess.run``), the floor of any out-of-process run. ``sandbox.overhead_p50_ms``
# is the difference of the two medians (what isolation adds; its ratio is bare / overhead).
# ``sandbox.governed_run_p50_ms`` is the whole ``ws.sandbox.run``: Hunter, governance, three ledger events.
# Goal: overhead <= 25 ms (median).
GOALS = (  # beside the benchmark below
    Goal(
        "sandbox.overhead_p50_ms", 25, text="sandbox isolation overhead over a bare `python -c pass` <= 25 ms"
    ),
)


@benchmark(
    "sandbox.run",
    figures=["sandbox.isolated_run_p50_ms", "sandbox.overhead_p50_ms", "sandbox.governed_run_p50_ms"],
    goals=GOALS,
)
def bench_sandbox(ctx: Context) -> Iterator[Figure]:
    """Isolated trivial runs against bare subprocesses of the same interpreter, interleaved, medians."""
    import statistics
    import subprocess

    from grace_core.sandbox.isolation import Limits, detect, run_isolated

    python = detect().python
    limits = Limits()
    n = ctx.size(40, 12, minimum=3)

    def bare() -> None:
        subprocess.run([python, "-I", "-S", "-c", "pass"], check=True)  # noqa: S603 - fixed argv

    def isolated() -> None:
        run_isolated("pass", language="python", limits=limits)

    bare()
    isolated()  # warm up: the page cache, the cgroup and bubblewrap paths
    ours: list[float] = []
    peer: list[float] = []
    for _ in range(n):  # interleaved, so a busy moment of the machine hits both alike
        peer.append(_timed(bare)[0])
        ours.append(_timed(isolated)[0])
    iso_ms = statistics.median(ours) * 1e3
    bare_ms = statistics.median(peer) * 1e3
    yield figure("sandbox.isolated_run_p50_ms", iso_ms, "ms", "subprocess.python_c_pass", bare_ms)
    yield figure(
        "sandbox.overhead_p50_ms", max(iso_ms - bare_ms, 0.001), "ms", "subprocess.python_c_pass", bare_ms
    )

    ws = ctx.simulated_workspace(seed=0)
    ws.sandbox.run("pass", actor="system", limits=limits)
    governed = sorted(
        _timed(lambda: ws.sandbox.run("pass", actor="system", limits=limits))[0] for _ in range(n)
    )
    yield figure(
        "sandbox.governed_run_p50_ms",
        statistics.median(governed) * 1e3,
        "ms",
        "subprocess.python_c_pass",
        bare_ms,
    )
