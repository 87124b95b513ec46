"""An artifact: one version of the text at a memory path, as the engine and its search index hand it out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Artifact"]


@dataclass(frozen=True)
class Artifact:
    path: str
    content: str
    content_type: str
    tags: tuple[str, ...]
    owner: str
    version: int
    updated_at: datetime
