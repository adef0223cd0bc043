"""The stages of a run's chain, in the order a batch meets them (see ``engine.pipeline``):
``ParseStage``, ``CheckStage``, ``DedupStage``, ``QuotaStage``, ``StoreStage``.
"""

from __future__ import annotations

from .checks import CheckStage
from .dedup import DedupStage
from .parse import ParseStage
from .quota import QuotaStage
from .store import StoreStage

__all__ = ["CheckStage", "DedupStage", "ParseStage", "QuotaStage", "StoreStage"]
