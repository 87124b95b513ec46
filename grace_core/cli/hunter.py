"""Commands of the hunter engine."""

from __future__ import annotations
