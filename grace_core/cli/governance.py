"""Commands of the governance engine."""

from __future__ import annotations
