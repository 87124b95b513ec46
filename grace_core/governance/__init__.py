"""Governance: policies as data, explained decisions, approvals.

Four modules, one job each:

* ``policy`` — the policy language: globs, conditions, ``Policy``, ``load_policies`` and the default pack
  (``grace_core/data/policies.yaml``);
* ``index`` — the decision index: ``PolicyIndex`` compiles a set of policies once and decides requests against
  it (deny beats review beats allow, default deny), each ``Decision`` explained;
* ``approvals`` — the ``Approval`` requests ``review`` decisions raise, and their queue;
* ``engine`` — ``Governance`` (``ws.governance``): policies that change only by events, and ``check``, the one
  way every engine, the command line and the views ask for permission (with the local operator's break-glass).
"""

from .approvals import APPROVAL_STATES, Approval, ApprovalQueue
from .engine import BREAK_GLASS_ACTIONS, OPERATOR, RECORDS, Governance, Record
from .index import Decision, PolicyIndex
from .policy import (
    DEFAULT_PACK,
    EFFECTS,
    OPS,
    POLICY_FIELDS,
    ROLES,
    Condition,
    Policy,
    compile_glob,
    default_pack,
    glob_regex,
    load_policies,
)

__all__ = [
    "APPROVAL_STATES",
    "BREAK_GLASS_ACTIONS",
    "DEFAULT_PACK",
    "EFFECTS",
    "OPERATOR",
    "OPS",
    "POLICY_FIELDS",
    "RECORDS",
    "ROLES",
    "Approval",
    "ApprovalQueue",
    "Condition",
    "Decision",
    "Governance",
    "Policy",
    "PolicyIndex",
    "Record",
    "compile_glob",
    "default_pack",
    "glob_regex",
    "load_policies",
]
