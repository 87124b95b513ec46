"""Governance: policies as data, explained decisions, approvals (see ``engine``)."""

from .engine import (
    APPROVER_ROLES,
    EFFECTS,
    OPS,
    ROLES,
    Approval,
    Condition,
    Decision,
    Governance,
    Policy,
    PolicyIndex,
    compile_glob,
    default_pack,
    glob_regex,
    load_policies,
)

__all__ = [
    "APPROVER_ROLES",
    "EFFECTS",
    "OPS",
    "ROLES",
    "Approval",
    "Condition",
    "Decision",
    "Governance",
    "Policy",
    "PolicyIndex",
    "compile_glob",
    "default_pack",
    "glob_regex",
    "load_policies",
]
