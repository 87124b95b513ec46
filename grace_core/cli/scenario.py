"""``grace scenario ls|show|run``: seeded scenarios with a hidden ground truth, scored over simulated time."""

from __future__ import annotations

import click

from grace_core.cli import (
    _PATH_KEY,
    _echo_json,
    _show,
    cli,
    hours_option,
    progress_option,
    score_every_option,
    workspace_options,
)
from grace_core.scenarios import get_scenario, run_scenario, scenarios
from grace_core.workspace import MEMORY

_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@cli.group()
@workspace_options
def scenario() -> None:
    """Seeded scenarios whose scores the loops can change (ops: hidden failure causes of task kinds; security:
    labelled attacks and benign traffic, an analyst judging alerts)."""


@scenario.command("ls")
@_JSON
def scenario_ls(as_json: bool) -> None:
    """The registered scenarios and what they measure."""
    rows = [
        {"name": name, "scores": ", ".join(cls.score_names), "summary": cls.summary}
        for name, cls in scenarios().items()
    ]
    _show(rows, ["name", "scores", "summary"], as_json)


@scenario.command("show")
@click.argument("name")
@click.option(
    "--seed", type=int, help="Also print the hidden ground truth this seed draws (for researchers)."
)
def scenario_show(name: str, seed: int | None) -> None:
    """What scenario NAME is and measures, as JSON (with --seed: the ground truth of that seed)."""
    cls = get_scenario(name)
    described = cls.describe()
    if seed is not None:
        described["seed"] = seed
        described["truth"] = cls(seed).truth
    _echo_json(described)


@scenario.command("run")
@click.argument("name")
@hours_option(default=24.0)
@click.option(
    "--seed", type=int, default=1, show_default=True, help="Seed of the ground truth and the traffic."
)
@click.option(
    "--loops",
    type=click.Choice(["on", "off", "all"]),
    default="on",
    show_default=True,
    help="on: reflection, learning, executor; off: the executor only; all: every loop (healing, meta too).",
)
@score_every_option
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A scenario option (e.g. -o questions=lab for qa); `grace scenario show NAME` lists them.",
)
@progress_option
@_JSON
@workspace_options
@click.pass_context
def scenario_run(
    ctx: click.Context,
    name: str,
    hours: float,
    seed: int,
    loops: str,
    score_every: float,
    options: tuple[str, ...],
    progress: bool,
    as_json: bool,
) -> None:
    """Run scenario NAME and print its final scores and learning curve.

    The workspace is the one --workspace names (created if needed; simulated time starts after its newest
    event), else a throwaway in-memory one; $GRACE_WORKSPACE is ignored here, so a scenario never lands in your
    working workspace by accident. The same seed and options on a new workspace give the same ledger head.
    """
    path = ctx.meta.get(_PATH_KEY) or MEMORY
    if ctx.meta.get("grace.snapshot"):
        raise click.UsageError("`grace scenario run` writes to the workspace; drop --snapshot")
    chosen: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"a scenario option is KEY=VALUE, not {option!r}")
        chosen[key.strip()] = value.strip()
    result = run_scenario(
        path,
        name,
        hours=hours,
        seed=seed,
        loops=loops,
        score_every=score_every,
        progress=progress,
        options=chosen,
    )
    if as_json:
        _echo_json(result.as_dict())
    else:
        click.echo(str(result))
