"""Benchmarks: every figure next to a peer measured in the same run, on the same machine.

``run()`` yields one dict per figure with exactly the keys ``name, value, unit, peer, peer_value, ratio``.
``ratio`` is oriented so that **> 1 means we are better than the peer**:

* throughputs (units ending in ``/s``): ``ratio = value / peer_value``;
* latencies (unit ``ms``): ``ratio = peer_value / value``.

``ratio_of(value, peer_value, unit)`` is that rule; ``lower_is_better(unit)`` tells which way a unit reads.

The peers are the floor or ceiling of the work each figure does, without what Grace adds on top:

* ``ledger.append`` vs ``duckdb.arrow_insert`` — the same rows (same columns and values, hashes included)
  built into an Arrow table from Python lists and inserted into a plain table of another DuckDB file in one
  transaction: no validation, no canonical JSON, no ids, no hashing, no projections.
* ``ledger.verify`` vs ``hashlib.sha256`` — bare ``sha256(prev_hash || record).digest()`` over the same
  bytes, fetched beforehand, in a Python loop: the physical limit of single-threaded Python hashing. Verify
  checks every link inside DuckDB on every core, so its ratio can exceed 1.
* ``mesh.publish_*`` vs ``duckdb.insert_commit`` — the same 4 threads doing single-row INSERTs into a DuckDB
  file, each its own transaction (what a naive event log does, with no group commit).
* ``merkle.*`` vs ``hashlib.sha256`` — one bare SHA-256 per 32-byte leaf; an RFC 6962 tree needs about two
  hashes per leaf (leaf plus interior nodes), so a ratio near 0.5 is the ceiling for pure Python.
* ``checkpoint.prove_p50_ms`` vs ``duckdb.point_select+ed25519.verify`` — fetching the event row by seq and
  checking one Ed25519 signature, the two steps no signed inclusion proof can skip.

One module per area, each benchmark with its goals declared beside it
(``@benchmark("name", figures=[...], goals=[Goal(...)])``): ``ledger``, ``mesh``, ``merkle``, ``governance``,
``hunter``, ``memory``, ``mldl``, ``sandbox``, ``views``, ``lake`` (the lake and sweeps), ``scenarios`` (a
simulated day). ``GOALS`` is every
goal; ``goal_status(figure)`` says whether a figure meets its goals (where we land is reported, not assumed).
The areas register in that order, the order ``run`` measures them in; ``run(only=[...])`` selects benchmarks
or single figures by name or glob.
"""

from __future__ import annotations

# The areas register their benchmarks when imported, in this order: the order of a run.
# isort: off
from grace_core.bench import ledger as ledger
from grace_core.bench import mesh as mesh
from grace_core.bench import merkle as merkle
from grace_core.bench import governance as governance
from grace_core.bench import hunter as hunter
from grace_core.bench import memory as memory
from grace_core.bench import mldl as mldl
from grace_core.bench import sandbox as sandbox
from grace_core.bench import views as views
from grace_core.bench import lake as lake
from grace_core.bench import scenarios as scenarios

# isort: on
from grace_core.bench import core
from grace_core.bench.core import *  # noqa: F403 - the framework is the package's API, listed once in core.__all__
from grace_core.bench.governance import (
    GOVERNANCE_ROLES,
    casbin_effect,
    casbin_enforcer,
    cedar_effect,
    cedar_entities,
    cedar_policies,
    cedar_request,
    governance_mix,
)
from grace_core.bench.memory import memory_corpus

GOALS = core.goals()

__all__ = [
    "GOALS",
    "GOVERNANCE_ROLES",
    "casbin_effect",
    "casbin_enforcer",
    "cedar_effect",
    "cedar_entities",
    "cedar_policies",
    "cedar_request",
    "governance_mix",
    "memory_corpus",
    *core.__all__,
]
