"""Commands of the model registry: ``grace models ls|show|runs|train|deploy|undeploy``.

The command line acts as the local operator (the service actor ``system``) unless ``--by`` names someone else;
training and deploying pass governance as in the library.
"""

from __future__ import annotations

import json
from typing import Any

import click

from grace_core.cli import _records, _show, _workspace, by_option, cli, json_pairs, workspace_options
from grace_core.mldl import ANOMALY_MODEL, INJECTION_MODEL, make_dataset, make_metric_frame

_BY = by_option()
_JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
_DEFAULT_NAMES = {"injection": INJECTION_MODEL, "anomaly": ANOMALY_MODEL}


def _metrics_text(text: Any, keys: tuple[str, ...] = ("f1", "precision", "recall", "auc")) -> str:
    if not isinstance(text, str) or not text:
        return ""
    metrics = json.loads(text)
    return " ".join(f"{k}={metrics[k]:.3f}" for k in keys if isinstance(metrics.get(k), int | float))


@cli.group()
@workspace_options
def models() -> None:
    """The model registry: runs, versions, aliases (champion, challenger) and deployments."""


@models.command("ls")
@_JSON
@workspace_options
@click.pass_context
def ls(ctx: click.Context, as_json: bool) -> None:
    """Every registered model with its versions and where its aliases point."""
    with _workspace(ctx) as ws:
        rows = _records(ws.mldl.models())
    _show(rows, ["name", "kind", "versions", "latest", "aliases", "updated_at"], as_json)


@models.command()
@click.argument("name")
@_JSON
@workspace_options
@click.pass_context
def show(ctx: click.Context, name: str, as_json: bool) -> None:
    """NAME's versions: run, aliases, held-out metrics, artifact digest."""
    with _workspace(ctx) as ws:
        ws.mldl.version(name)  # a clear error for an unknown model
        rows = _records(ws.mldl.versions(name))
    if not as_json:
        for row in rows:
            row["metrics"] = _metrics_text(row["metrics"])
            row["artifact_sha256"] = str(row["artifact_sha256"])[:19]
    _show(
        rows,
        ["version", "aliases", "run_id", "metrics", "artifact_sha256", "registered_by", "registered_at"],
        as_json,
    )


@models.command()
@click.argument("name", required=False)
@_JSON
@workspace_options
@click.pass_context
def runs(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """Training runs (of NAME, or all): status, seed, params and held-out metrics."""
    with _workspace(ctx) as ws:
        rows = _records(ws.mldl.runs(name))
    if not as_json:
        for row in rows:
            row["metrics"] = _metrics_text(row["metrics"])
    _show(rows, ["run_id", "model", "kind", "status", "seed", "params", "metrics", "started_at"], as_json)


@models.command()
@click.argument("kind", type=click.Choice(["injection", "anomaly"]))
@click.option("--name", help="Model name (default: prompt-injection or metrics-anomaly).")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE", help="A training parameter.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data, split and model.")
@click.option("--rows", type=click.IntRange(min=40), help="Rows of the seeded dataset (default: the kind's).")
@click.option("--register", is_flag=True, help="Register the run as a new model version.")
@click.option("--deploy", "alias", metavar="ALIAS", help="Register and deploy under ALIAS (e.g. champion).")
@_BY
@workspace_options
@click.pass_context
def train(
    ctx: click.Context,
    kind: str,
    name: str | None,
    params: tuple[str, ...],
    seed: int,
    rows: int | None,
    register: bool,
    alias: str | None,
    by: str,
) -> None:
    """Train a KIND model on its seeded dataset, evaluate it on held-out data, and print the run."""
    name = name or _DEFAULT_NAMES[kind]
    with _workspace(ctx, writes=True) as ws:
        data, source = None, ""
        if rows is not None:
            make = make_dataset if kind == "injection" else make_metric_frame
            data = make(rows, seed=seed)
            source = f"grace_core.mldl.{make.__name__}({rows}, seed={seed})"
        run = ws.mldl.train(
            name,
            kind,
            data,
            params=json_pairs(params, "--param", form="KEY=VALUE"),
            seed=seed,
            actor=by,
            source=source,
        )
        click.echo(f"run {run.run_id} {run.status}: {_metrics_text(json.dumps(run.metrics))}")
        if register or alias:
            mv = ws.mldl.register(run, actor=by)
            click.echo(f"registered {mv.name} version {mv.version}")
            if alias:
                ws.mldl.deploy(mv.name, mv.version, alias, actor=by)
                click.echo(f"deployed {mv.name} version {mv.version} as {alias}")


@models.command()
@click.argument("name")
@click.argument("version", type=int)
@click.option("--alias", default="champion", show_default=True, help="The alias to point at VERSION.")
@_BY
@workspace_options
@click.pass_context
def deploy(ctx: click.Context, name: str, version: int, alias: str, by: str) -> None:
    """Point ALIAS of NAME at VERSION (governed: model.deploy)."""
    with _workspace(ctx, writes=True) as ws:
        mv = ws.mldl.deploy(name, version, alias, actor=by)
    click.echo(f"deployed {mv.name} version {mv.version} as {alias}")


@models.command()
@click.argument("name")
@click.option("--alias", default="champion", show_default=True)
@_BY
@workspace_options
@click.pass_context
def undeploy(ctx: click.Context, name: str, alias: str, by: str) -> None:
    """Remove ALIAS from NAME (a model without a champion is not used)."""
    with _workspace(ctx, writes=True) as ws:
        ws.mldl.undeploy(name, alias, actor=by)
    click.echo(f"removed {name}@{alias}")
