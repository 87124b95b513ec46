"""Commands of the auth engine."""

from __future__ import annotations
