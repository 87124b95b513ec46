"""DuckDB connection handling: opening a workspace file, numbered migrations, offline extensions."""

from __future__ import annotations

import importlib
import importlib.resources
import re
import threading
from pathlib import Path

import duckdb

from grace_core.errors import WorkspaceError

__all__ = [
    "EXTENSIONS",
    "apply_migrations",
    "extension_path",
    "load_extension",
    "schema_version",
    "sql_string",
]

# DuckDB extension -> the wheel that ships its binary (pinned to the same DuckDB release).
EXTENSIONS = {
    "fts": "duckdb_extension_fts",
    "ducklake": "duckdb_extension_ducklake",
    "sqlite_scanner": "duckdb_extension_sqlite_scanner",
    "postgres_scanner": "duckdb_extension_postgres_scanner",
}
_ALIASES = {"sqlite": "sqlite_scanner", "postgres": "postgres_scanner"}
_MIGRATION = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_load_lock = threading.Lock()


def sql_string(text: str) -> str:
    """``text`` as a SQL string literal, for the statements that take no bound parameters (ATTACH, LOAD)."""
    return "'" + text.replace("'", "''") + "'"


def extension_path(name: str) -> Path:
    """Path of the ``.duckdb_extension`` binary shipped in the matching ``duckdb-extension-*`` wheel."""
    name = _ALIASES.get(name, name)
    if name not in EXTENSIONS:
        raise WorkspaceError(f"unknown DuckDB extension {name!r}; known: {', '.join(sorted(EXTENSIONS))}")
    module = EXTENSIONS[name]
    try:
        package = importlib.import_module(module)
    except ImportError as exc:
        raise WorkspaceError(
            f"DuckDB extension {name!r} needs the wheel {module.replace('_', '-')}=={duckdb.__version__}"
        ) from exc
    version = f"v{duckdb.__version__}"
    path = Path(package.__file__ or "").parent / "extensions" / version / f"{name}.duckdb_extension"
    if not path.is_file():
        raise WorkspaceError(
            f"{module} has no binary for DuckDB {version} (looked for {path.name}); "
            "install the extension wheel of exactly the DuckDB version in use"
        )
    return path


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load an extension offline, from its wheel, by file path (never DuckDB's run-time download)."""
    path = extension_path(name)
    with _load_lock:
        con.execute(f"LOAD {sql_string(path.as_posix())}")


def _migrations() -> list[tuple[int, str, str]]:
    found = []
    for entry in importlib.resources.files(__package__).joinpath("migrations").iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found)


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def apply_migrations(con: duckdb.DuckDBPyConnection) -> list[int]:
    """Apply every numbered migration newer than the workspace's schema, each in its own transaction."""
    current = schema_version(con)
    known = _migrations()
    if known and current > known[-1][0]:
        raise WorkspaceError(
            f"workspace schema version {current} is newer than this grace_core ({known[-1][0]}); upgrade grace"
        )
    applied = []
    for version, name, sql in known:
        if version <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, now())",
                [version, name],
            )
            con.execute("COMMIT")
        except Exception as exc:
            con.execute("ROLLBACK")
            raise WorkspaceError(f"migration {version:03d}_{name} failed: {exc}") from exc
        applied.append(version)
    return applied
