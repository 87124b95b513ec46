"""Commands of the memory engine: ``grace memory ls|cat|put|mv|rm|restore|log|diff|search|import|export``.

Like the other engines' commands, the command line acts as the local operator, the service actor ``system``,
unless ``--by`` names someone else; every write passes governance and Hunter as in the library.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from grace_core.cli import _records, _show, _workspace, by_option, cli, workspace_options

_BY = by_option()
_REASON = click.option("--reason", default="", help="Why (kept in the artifact's history).")
_JSON = click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")


@cli.group()
@workspace_options
def memory() -> None:
    """The workspace's memory: artifacts at paths, every version kept."""


@memory.command("ls")
@click.argument("prefix", default="/")
@click.option("--deleted", is_flag=True, help="List the soft-deleted artifacts instead.")
@click.option("--tree", "as_tree", is_flag=True, help="List the folders (with artifact counts) instead.")
@_JSON
@workspace_options
@click.pass_context
def ls(ctx: click.Context, prefix: str, deleted: bool, as_tree: bool, as_json: bool) -> None:
    """Artifacts under PREFIX (a folder, default /), newest first."""
    with _workspace(ctx) as ws:
        if as_tree:
            _show(_records(ws.memory.tree(prefix)), ["folder", "artifacts", "total"], as_json)
            return
        rows = _records(ws.memory.list(prefix, deleted=deleted))
    _show(rows, ["path", "version", "owner", "content_type", "tags", "updated_at"], as_json)


@memory.command()
@click.argument("path")
@click.option("--version", "-v", "version", type=int, help="An older version (default: the latest).")
@workspace_options
@click.pass_context
def cat(ctx: click.Context, path: str, version: int | None) -> None:
    """Print an artifact's content."""
    with _workspace(ctx) as ws:
        content = ws.memory.read(path, version=version).content
    click.echo(content, nl=not content.endswith("\n"))


@memory.command()
@click.argument("path")
@click.argument("source", default="-", metavar="[FILE|-]")
@click.option(
    "--tag", "-t", "tags", multiple=True, help="A tag (repeatable; default: keep the current tags)."
)
@click.option("--type", "content_type", default="text/markdown", show_default=True, help="Content type.")
@_BY
@_REASON
@workspace_options
@click.pass_context
def put(
    ctx: click.Context, path: str, source: str, tags: tuple[str, ...], content_type: str, by: str, reason: str
) -> None:
    """Write FILE (or standard input) to PATH as a new version; prints the path and version."""
    if source == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise click.UsageError(f"cannot read {source}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.UsageError(f"{source} is not UTF-8 text; memory holds text") from exc
    with _workspace(ctx, writes=True) as ws:
        art = ws.memory.write(
            path, text, actor=by, content_type=content_type, tags=tags or None, reason=reason
        )
        masked = art.content != text
    click.echo(f"{art.path} version {art.version}" + (" (secrets masked)" if masked else ""))


@memory.command()
@click.argument("source")
@click.argument("target")
@_BY
@_REASON
@workspace_options
@click.pass_context
def mv(ctx: click.Context, source: str, target: str, by: str, reason: str) -> None:
    """Move (or rename) an artifact or a whole folder."""
    with _workspace(ctx, writes=True) as ws:
        moved = ws.memory.move(source, target, actor=by, reason=reason)
    for path in moved:
        click.echo(path)


@memory.command()
@click.argument("path")
@_BY
@_REASON
@workspace_options
@click.pass_context
def rm(ctx: click.Context, path: str, by: str, reason: str) -> None:
    """Soft-delete an artifact (its versions stay; `grace memory restore` undoes it)."""
    with _workspace(ctx, writes=True) as ws:
        ws.memory.delete(path, actor=by, reason=reason)
    click.echo(f"deleted {path}")


@memory.command()
@click.argument("path")
@click.option("--version", "-v", "version", type=int, help="Make this old version current again instead.")
@_BY
@_REASON
@workspace_options
@click.pass_context
def restore(ctx: click.Context, path: str, version: int | None, by: str, reason: str) -> None:
    """Undo a delete, or (with --version) restore an old version as the newest one."""
    with _workspace(ctx, writes=True) as ws:
        if version is None:
            art = ws.memory.restore(path, actor=by, reason=reason)
        else:
            art = ws.memory.restore_version(path, version, actor=by, reason=reason)
    click.echo(f"{art.path} version {art.version}")


@memory.command()
@click.argument("path")
@click.option("--versions", "show_versions", is_flag=True, help="List the versions instead of the history.")
@_JSON
@workspace_options
@click.pass_context
def log(ctx: click.Context, path: str, show_versions: bool, as_json: bool) -> None:
    """An artifact's history from the ledger: who did what, when and why."""
    with _workspace(ctx) as ws:
        if show_versions:
            rows = _records(ws.memory.versions(path))
            columns = ["version", "actor", "ts", "size", "reason"]
        else:
            rows = _records(ws.memory.audit(path))
            columns = ["seq", "ts", "action", "actor", "version", "path", "new_path", "masked", "reason"]
    _show(rows, columns, as_json)


@memory.command()
@click.argument("path")
@click.argument("a", type=int)
@click.argument("b", type=int, required=False)
@workspace_options
@click.pass_context
def diff(ctx: click.Context, path: str, a: int, b: int | None) -> None:
    """A unified diff of PATH from version A to version B (default: the latest)."""
    with _workspace(ctx) as ws:
        click.echo(ws.memory.diff(path, a, b), nl=False)


@memory.command()
@click.argument("query")
@click.option("--prefix", help="Only under this folder.")
@click.option("--tag", "-t", "tags", multiple=True, help="Only artifacts with this tag (repeatable: all).")
@click.option("--owner", help="Only artifacts created by this actor.")
@click.option("--since", help="Only artifacts updated at or after this time (ISO 8601).")
@click.option("--until", help="Only artifacts updated before this time (ISO 8601).")
@click.option("--limit", "-n", default=10, show_default=True, type=click.IntRange(1, 1000))
@_JSON
@workspace_options
@click.pass_context
def search(
    ctx: click.Context,
    query: str,
    prefix: str | None,
    tags: tuple[str, ...],
    owner: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Full-text search, best first (BM25)."""
    with _workspace(ctx) as ws:
        hits = ws.memory.search(
            query, prefix=prefix, tags=tags or None, owner=owner, since=since, until=until, limit=limit
        )
        rows = _records(hits)
    for row in rows:
        row["score"] = round(float(row["score"]), 4)
    _show(rows, ["path", "score", "snippet"], as_json)


@memory.command("import")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--into", default="/", show_default=True, help="The memory folder to write under.")
@_BY
@_REASON
@workspace_options
@click.pass_context
def import_(ctx: click.Context, directory: str, into: str, by: str, reason: str) -> None:
    """Write every UTF-8 text file under DIRECTORY into memory (unchanged files are skipped)."""
    with _workspace(ctx, writes=True) as ws:
        written = ws.memory.import_tree(directory, into=into, actor=by, reason=reason)
    for path in written:
        click.echo(path)


@memory.command()
@click.argument("prefix")
@click.argument("directory", type=click.Path(file_okay=False))
@workspace_options
@click.pass_context
def export(ctx: click.Context, prefix: str, directory: str) -> None:
    """Write the artifacts under PREFIX as files under DIRECTORY."""
    with _workspace(ctx) as ws:
        files = ws.memory.export_tree(prefix, directory)
    for file in files:
        click.echo(str(file))
