"""Batch mode: planned requests as provider batch jobs (OpenAI Files + Batches API), resumable at every step.

``client`` talks to the endpoints, ``files`` writes the input files within the
provider's limits, ``ledger`` records every step before the next one, ``poll``
spaces the status checks, ``limit`` reads the enqueued-token limit from a
refusal, ``results`` turns output lines into outcomes for the run's chain and
``cleanup`` deletes a batch's provider files once its outcomes are on disk.
``engine.sources.batch`` drives them.
"""

from .cleanup import Deletions, delete_files
from .client import BatchClient, BatchInfo, NoBatchApi
from .files import InputFile, InputWriter, encode_line, parse_size, read_requests
from .ledger import FINAL, Ledger, LedgerFile
from .limit import LIMIT_SAFETY, is_token_limit, limit_from
from .poll import PollPolicy

__all__ = [
    "FINAL",
    "LIMIT_SAFETY",
    "BatchClient",
    "BatchInfo",
    "Deletions",
    "InputFile",
    "InputWriter",
    "Ledger",
    "LedgerFile",
    "NoBatchApi",
    "PollPolicy",
    "delete_files",
    "encode_line",
    "is_token_limit",
    "limit_from",
    "parse_size",
    "read_requests",
]
