"""``grace simulate``: drive a workspace with the seeded synthetic workload and print what happened."""

from __future__ import annotations

import click

from grace_core.cli import _PATH_KEY, _echo_json, cli, hours_option, progress_option, workspace_options
from grace_core.workload import simulate as run_simulation
from grace_core.workload import simulation_clock
from grace_core.workspace import MEMORY, open_workspace


@cli.command()
@hours_option(default=24.0)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of every random choice.")
@click.option("--users", type=click.IntRange(min=1, max=64), default=8, show_default=True)
@click.option("--attack-share", type=click.FloatRange(0, 1), default=0.05, show_default=True)
@click.option("--failure-share", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option(
    "--no-loops", is_flag=True, help="Do not start the registered loops (only the users act; nothing ticks)."
)
@click.option(
    "--min-interval",
    type=click.FloatRange(min=0),
    default=120.0,
    show_default=True,
    help="Loops tick at most this often (simulated seconds) during the run; 0 keeps their own intervals.",
)
@progress_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@workspace_options
@click.pass_context
def simulate(
    ctx: click.Context,
    hours: float,
    seed: int,
    users: int,
    attack_share: float,
    failure_share: float,
    no_loops: bool,
    min_interval: float,
    progress: bool,
    as_json: bool,
) -> None:
    """Run the seeded synthetic workload for --hours of simulated time and print a summary.

    Scripted users (researchers and viewers with favourite topics) chat, write memory notes, attack now and
    then (secrets, prompt injections) and run flaky tasks, while every registered loop ticks on a simulated
    clock. The workspace is the one --workspace names (created if needed), else a throwaway in-memory one;
    $GRACE_WORKSPACE is ignored here, so a simulation never lands in your working workspace by accident. The
    same seed on a new workspace gives the same ledger, down to the head hash printed at the end.
    """
    path = ctx.meta.get(_PATH_KEY) or MEMORY
    if ctx.meta.get("grace.snapshot"):
        raise click.UsageError("`grace simulate` writes to the workspace; drop --snapshot")
    with open_workspace(path, clock=simulation_clock(path), seed=seed) as ws:
        summary = run_simulation(
            ws,
            hours=hours,
            seed=seed,
            users=users,
            attack_share=attack_share,
            failure_share=failure_share,
            progress=progress,
            start_loops=not no_loops,
            min_interval=min_interval or None,
        )
    if as_json:
        _echo_json(summary.as_dict())
    else:
        click.echo(str(summary))
