"""``grace experiment SCENARIO``: arms of a scenario across seeds, means and paired differences with intervals."""

from __future__ import annotations

import click

from grace_core.cli import _echo_json, cli, hours_option, progress_option, score_every_option


@cli.command()
@click.argument("scenario")
@click.option(
    "--arm",
    "arms",
    multiple=True,
    help="An arm: on, off, all, or NAME:loops=on|off|all|a+b,loop.param=value (repeat; default: off and on).",
)
@click.option(
    "--seeds", default="1-5", show_default=True, help="Seeds, e.g. 1-5 or 1,2,7 (every arm runs each)."
)
@hours_option(default=6.0, text="Simulated time of each run.")
@score_every_option
@click.option("--baseline", help="The arm differences are taken to (default: the first arm).")
@click.option("--name", help="The experiment's key in the lake table (default: SCENARIO-experiment).")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default="experiment-runs",
    show_default=True,
    help="Where the results lake (and kept workspaces) go; a rerun skips the runs stored there.",
)
@click.option("--keep-workspaces", is_flag=True, help="Keep each run's workspace file (default: in memory).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Parallel runs.")
@click.option(
    "--backend",
    type=click.Choice(["processes", "ray"]),
    default="processes",
    show_default=True,
    help="Where parallel runs go (with --workers > 1).",
)
@click.option(
    "--confidence",
    type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
    default=0.95,
    show_default=True,
    help="Confidence level of the bootstrap intervals.",
)
@click.option(
    "--resamples", type=click.IntRange(min=100), default=2000, show_default=True, help="Bootstrap resamples."
)
@click.option("--ci-seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resampling.")
@click.option("--curves", is_flag=True, help="Also print the learning curves (mean and interval per window).")
@progress_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
def experiment(
    scenario: str,
    arms: tuple[str, ...],
    seeds: str,
    hours: float,
    score_every: float,
    baseline: str | None,
    name: str | None,
    workdir: str,
    keep_workspaces: bool,
    workers: int,
    backend: str,
    confidence: float,
    resamples: int,
    ci_seed: int,
    curves: bool,
    progress: bool,
    as_json: bool,
) -> None:
    """Run SCENARIO under each arm for each seed; print per-arm means and paired differences to the baseline.

    Every arm runs the same seeds (the same hidden truth and traffic), so differences are paired by seed. The
    intervals are bootstrap intervals (BCa), seeded by --ci-seed: the same runs give the same table.
    """
    from grace_core.experiments import parse_seeds, run_experiment  # SciPy: loaded only when asked for

    report = run_experiment(
        scenario,
        arms=list(arms) or ["off", "on"],
        seeds=parse_seeds(seeds),
        hours=hours,
        score_every=score_every,
        baseline=baseline,
        name=name,
        workdir=workdir,
        keep_workspaces=keep_workspaces,
        workers=workers,
        backend=backend,
        progress=progress,
        confidence=confidence,
        resamples=resamples,
        ci_seed=ci_seed,
    )
    if as_json:
        _echo_json(report.as_dict())
        return
    click.echo(str(report))
    if curves:
        click.echo(
            f"\nlearning curves (mean [{confidence:.0%} interval] per window, by simulated hour at its end):"
        )
        table = report.curves.assign(
            value=[
                "-"
                if row["n"] == 0
                else (
                    f"{row['mean']:.3g}"
                    if row["n"] < 2
                    else f"{row['mean']:.3g} [{row['low']:.3g}, {row['high']:.3g}]"
                )
                for row in report.curves.to_dict("records")
            ]
        ).pivot_table(index=["arm", "hours"], columns="score", values="value", aggfunc="first")
        click.echo(table.reindex(columns=report.scores).to_string())
    click.echo(
        f"\nstored in the lake table sweep_results (catalog {report.lake['catalog']}), key {report.name}"
    )
