"""The batch source: a run's plan as provider batch jobs (OpenAI Files + Batches API), resumable at every step.

``options`` holds what a batch run is told, ``core`` the state every part
shares (the ledger with its crash hook, the enqueued-token limit), ``submit``
plans, writes, uploads and creates, ``collect`` polls, downloads and ingests,
``offline`` exports and imports for another machine, and ``source`` runs the
loop (``generate_batch``).
"""

from ...batch.limit import is_token_limit, limit_from
from .core import BATCH_DIR, SimulatedCrash
from .options import BatchOptions, batch_prices
from .source import BatchSource, generate_batch, pending_batches

__all__ = [
    "BATCH_DIR",
    "BatchOptions",
    "BatchSource",
    "SimulatedCrash",
    "batch_prices",
    "generate_batch",
    "is_token_limit",
    "limit_from",
    "pending_batches",
]
