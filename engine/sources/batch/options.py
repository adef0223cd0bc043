"""What a batch run is told: file limits, the token limit, the discount, polling, file deletion, the crash hook."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...batch.files import DEFAULT_MAX_BYTES, DEFAULT_MAX_REQUESTS
from ...batch.poll import PollPolicy
from ...config import RunConfig
from ...errors import ConfigError

__all__ = ["DEFAULT_DISCOUNT", "BatchOptions", "batch_prices"]

DEFAULT_DISCOUNT = 0.5


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    max_requests: int = DEFAULT_MAX_REQUESTS
    max_bytes: int = DEFAULT_MAX_BYTES
    #: The provider's enqueued prompt-token limit, when known; otherwise learned from its refusal.
    max_enqueued_tokens: int | None = None
    #: Batch price as a share of --price-in/--price-out.
    discount: float = DEFAULT_DISCOUNT
    poll: PollPolicy = PollPolicy()
    #: Leave the uploaded input files and the output/error files at the provider (default: deleted once ingested).
    keep_files: bool = False
    #: Testing the resume contract: kill the process (SIGKILL) just before the K-th ledger event of a kind,
    #: or raise ``SimulatedCrash`` there when ``crash_kill`` is False (an in-process test).
    crash_before: tuple[str, int] | None = None
    crash_kill: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.discount <= 1:
            raise ConfigError(f"--batch-discount must be within (0, 1], got {self.discount}", hint="e.g. 0.5")
        if self.max_enqueued_tokens is not None and self.max_enqueued_tokens < 1:
            raise ConfigError("--batch-max-enqueued-tokens must be at least 1")
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ConfigError("--batch-max-requests and --batch-max-bytes must be at least 1")


def batch_prices(run: RunConfig, discount: float) -> RunConfig:
    """``run`` with batch prices: the online prices times ``discount`` (prices are not part of the fingerprint)."""
    return replace(
        run,
        price_in=None if run.price_in is None else run.price_in * discount,
        price_out=None if run.price_out is None else run.price_out * discount,
    )
