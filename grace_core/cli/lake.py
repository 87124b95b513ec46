"""``grace lake attach|sync|status|compact|expire|snapshots|query|verify``: publish a workspace to a DuckLake.

``attach``, ``sync``, ``status``, ``compact`` and ``expire`` act on the workspace (the process that owns it is
the lake's only writer). ``snapshots``, ``query`` and ``verify`` only read the lake: they take ``--catalog``
(and ``--data``) and never open the workspace, so they work on any host while the owner keeps writing; without
``--catalog`` they use the lake attached to the workspace.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import click

from grace_core.cli import _echo_json, _records, _show, _workspace, by_option, cli, workspace_options
from grace_core.errors import LakeError
from grace_core.lake import DEFAULT_RETENTION, LakeReader, open_lake

_JSON = click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
_CATALOG = click.option(
    "--catalog", help="Catalog URL: sqlite:PATH, postgres:'dbname=... host=...', or a path."
)
_DATA = click.option("--data", help="Data path (Parquet files); default: the one recorded in the catalog.")
_SNAPSHOT = click.option("--at", "snapshot", help="A snapshot id or an ISO time (default: the latest).")


def _snapshot(value: str | None) -> int | datetime | None:
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.UsageError(f"--at takes a snapshot id or an ISO time, not {value!r}") from exc


def _reader(ctx: click.Context, catalog: str | None, data: str | None, at: str | None) -> LakeReader:
    if catalog is not None:
        return open_lake(catalog, data, snapshot=_snapshot(at))
    with _workspace(ctx) as ws:
        if not ws.lake.attached:
            raise LakeError("no --catalog given and no lake attached to the workspace")
        return ws.lake.reader(snapshot=_snapshot(at))


@cli.group()
@workspace_options
def lake() -> None:
    """Publish the workspace to a DuckLake and read it from anywhere."""


@lake.command()
@click.option(
    "--catalog", required=True, help="sqlite:PATH, postgres:'dbname=... host=...', or a DuckDB file."
)
@click.option("--data", required=True, help="Where the Parquet files go (a folder or object-store URL).")
@click.option(
    "--retention", default=f"{int(DEFAULT_RETENTION // 86400)}d", show_default=True, help="Snapshots kept."
)
@by_option("Who attaches it.")
@workspace_options
@click.pass_context
def attach(ctx: click.Context, catalog: str, data: str, retention: str, by: str) -> None:
    """Record the lake in the workspace (its password, if any, stays among the workspace's secrets)."""
    with _workspace(ctx, writes=True) as ws:
        config = ws.lake.attach(catalog, data, retention=retention, actor=by)
    click.echo(f"lake attached: {config['catalog']} (data {config['data']}); run `grace lake sync`")


@lake.command()
@_JSON
@workspace_options
@click.pass_context
def sync(ctx: click.Context, as_json: bool) -> None:
    """Publish the events after the lake's highest seq, and the projections they touched."""
    with _workspace(ctx, writes=True) as ws:
        report = ws.lake.sync()
    if as_json:
        _echo_json(report.as_dict())
        return
    rate = report.events / report.seconds if report.seconds else 0.0
    click.echo(
        f"synced {report.events} events (seq {report.seq_from + 1}..{report.seq_to}) and "
        f"{len(report.tables)} tables in {report.seconds:.2f} s ({rate:,.0f} events/s)"
        if report.events
        else f"the lake is up to date (seq {report.seq_to})"
    )


@lake.command()
@_JSON
@workspace_options
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The attached lake, its highest seq and snapshot, and how far behind the ledger it is."""
    with _workspace(ctx) as ws:
        info = ws.lake.status()
    if as_json:
        _echo_json(info)
        return
    if not info["attached"]:
        click.echo("no lake attached")
        return
    for key in ("catalog", "data", "retention", "lake_seq", "ledger_seq", "behind", "snapshot"):
        click.echo(f"{key:<10}  {info[key]}")


@lake.command()
@_JSON
@workspace_options
@click.pass_context
def compact(ctx: click.Context, as_json: bool) -> None:
    """Flush inlined rows and merge small Parquet files."""
    with _workspace(ctx, writes=True) as ws:
        result = ws.lake.compact()
    _echo_json(result) if as_json else click.echo(
        f"files: {result['files_before']} -> {result['files_after']}"
    )


@lake.command()
@click.option("--older-than", help="e.g. 7d, 12h, 0 (default: the retention setting).")
@_JSON
@workspace_options
@click.pass_context
def expire(ctx: click.Context, older_than: str | None, as_json: bool) -> None:
    """Expire old snapshots and delete the files only they used."""
    with _workspace(ctx, writes=True) as ws:
        result = ws.lake.expire(older_than)
    if as_json:
        _echo_json(result)
    else:
        click.echo(
            f"{result['snapshots_expired']} snapshots expired, {result['files_deleted']} files deleted"
        )


@lake.command()
@_CATALOG
@_DATA
@_JSON
@workspace_options
@click.pass_context
def snapshots(ctx: click.Context, catalog: str | None, data: str | None, as_json: bool) -> None:
    """The lake's snapshots (each one a version you can query with --at)."""
    with _reader(ctx, catalog, data, None) as reader:
        rows = _records(reader.snapshots())
    _show(rows, ["snapshot_id", "snapshot_time", "changes"], as_json)


@lake.command()
@click.argument("sql")
@_CATALOG
@_DATA
@_SNAPSHOT
@_JSON
@workspace_options
@click.pass_context
def query(
    ctx: click.Context, sql: str, catalog: str | None, data: str | None, snapshot: str | None, as_json: bool
) -> None:
    """Run a read query on the lake (tables by their plain names), live or --at a snapshot."""
    with _reader(ctx, catalog, data, snapshot) as reader:
        frame = reader.sql(sql)
    _show(_records(frame), [str(c) for c in frame.columns], as_json)


@lake.command("verify")
@_CATALOG
@_DATA
@_SNAPSHOT
@_JSON
@workspace_options
@click.pass_context
def verify_cmd(
    ctx: click.Context, catalog: str | None, data: str | None, snapshot: str | None, as_json: bool
) -> None:
    """Verify the hash chain and signed checkpoints from the lake alone (exit 1 if broken)."""
    with _reader(ctx, catalog, data, snapshot) as reader:
        report = reader.verify()
    _echo_json(dataclasses.asdict(report)) if as_json else click.echo(str(report))
    if not report.ok:
        ctx.exit(1)
