"""``grace sweep CONFIG.yaml``: run a grid or random search of simulated experiments, results in a lake table."""

from __future__ import annotations

import click

from grace_core.cli import _echo_json, _records, _show, cli, progress_option
from grace_core.sweep import backends, run_sweep


@cli.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--backend",
    type=click.Choice(["auto", "ray", "processes", "serial"]),
    default="auto",
    show_default=True,
    help="auto: Ray when installed (a cluster when RAY_ADDRESS is set), else local processes.",
)
@click.option("--workers", type=click.IntRange(min=1), help="Parallel runs (default: the config's workers).")
@click.option("--limit", type=click.IntRange(min=0), help="Run at most this many of the missing runs.")
@progress_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result row, then the summary.")
def sweep(
    config: str, backend: str, workers: int | None, limit: int | None, progress: bool, as_json: bool
) -> None:
    """Run the sweep CONFIG describes; runs already in its lake table are skipped (so a rerun resumes)."""
    if backend == "ray" and "ray" not in backends():
        raise click.UsageError("--backend ray needs Ray: pip install ray")
    report = run_sweep(config, backend=backend, workers=workers, progress=progress, limit=limit)
    rows = _records(report.results[["run_id", "params", "seed", "value", "head_seq", "wall_seconds"]])
    summary = {
        "sweep": report.name,
        "backend": report.backend,
        "planned": report.planned,
        "skipped": report.skipped,
        "ran": report.ran,
        "seconds": round(report.seconds, 2),
        "best": report.best(),
    }
    _show(rows, ["run_id", "params", "seed", "value", "head_seq", "wall_seconds"], as_json, json_fields="all")
    if as_json:
        _echo_json(summary)
        return
    click.echo(
        f"{report.ran} runs in {report.seconds:.1f} s on {report.backend} ({report.skipped} already done of "
        f"{report.planned}); best: {summary['best']}"
    )
