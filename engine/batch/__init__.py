"""Batch mode: planned requests as provider batch jobs (OpenAI Files + Batches API), resumable at every step.

``client`` talks to the endpoints, ``files`` writes the input files within the
provider's limits, ``ledger`` records every step before the next one, ``poll``
spaces the status checks and ``results`` turns output lines into outcomes for
the run's chain. ``engine.sources.batch`` drives them.
"""

from .client import BatchClient, BatchInfo, NoBatchApi
from .files import InputFile, InputWriter, encode_line, parse_size, read_requests
from .ledger import FINAL, Ledger, LedgerFile
from .poll import PollPolicy

__all__ = [
    "FINAL",
    "BatchClient",
    "BatchInfo",
    "InputFile",
    "InputWriter",
    "Ledger",
    "LedgerFile",
    "NoBatchApi",
    "PollPolicy",
    "encode_line",
    "parse_size",
    "read_requests",
]
