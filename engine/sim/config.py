"""The simulator's knobs: one frozen, keyword-only dataclass, validated on creation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import ConfigError

__all__ = [
    "DEFAULT_HANG_S",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODEL",
    "FAULT_KINDS",
    "SimConfig",
]

#: Every fault the simulator can inject, in the order ``error_rate`` is split across them.
#: ``500``/``503``: an OpenAI-style server error; ``timeout``: hang for ``hang_s`` seconds;
#: ``drop``: close the connection without a response; ``malformed``: 200 with broken JSON;
#: ``truncated``: a stream without its end (no finish chunk, no ``[DONE]``) or a JSON body cut short.
FAULT_KINDS = ("500", "503", "timeout", "drop", "malformed", "truncated")

DEFAULT_MODEL = "sim"
DEFAULT_HANG_S = 60.0
#: What a request without ``max_tokens`` reserves against the TPM budget and may produce.
DEFAULT_MAX_TOKENS = 1024
DEFAULT_DUP_RING = 1024
#: Batch API: lines a batch executes per second, and seconds spent validating and finalizing.
DEFAULT_BATCH_RPS = 5000.0
DEFAULT_BATCH_PHASE_S = 0.05


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """How the simulator behaves. Times in milliseconds; rates are probabilities in [0, 1]."""

    model: str = DEFAULT_MODEL
    latency_ms: float = 0.0
    token_delay_ms: float = 0.0
    rpm_limit: float | None = None
    tpm_limit: float | None = None
    #: Total fault probability, split evenly across ``FAULT_KINDS``.
    error_rate: float = 0.0
    #: Per-kind fault probabilities; override the even split of ``error_rate`` for the kinds named.
    faults: Mapping[str, float] = field(default_factory=dict)
    hang_s: float = DEFAULT_HANG_S
    dup_rate: float = 0.0
    dup_ring: int = DEFAULT_DUP_RING
    require_key: str | None = field(default=None, repr=False)
    strict_model: bool = False
    seed: int = 0
    #: Serve /v1/files and /v1/batches (off: a server without the Batch API, which answers 404).
    batch_api: bool = True
    batch_rps: float = DEFAULT_BATCH_RPS
    batch_phase_s: float = DEFAULT_BATCH_PHASE_S
    #: Enqueued prompt tokens (over batches not yet done) above which a new batch fails with token_limit_exceeded.
    batch_token_limit: int | None = None
    #: Refuse such a batch at creation (HTTP 400, code token_limit_exceeded) instead of failing it in validation
    #: (OpenAI's behaviour); some OpenAI-compatible servers do this.
    batch_token_limit_on_create: bool = False
    #: Faults on demand: every k-th batch created fails validation / expires half done (0 = never).
    batch_fail_every: int = 0
    batch_expire_every: int = 0
    #: Share of batch lines that fail with a server error (they go to the batch's error file).
    batch_error_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("latency_ms", "token_delay_ms", "hang_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("rpm_limit", "tpm_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be a positive number, got {value}", hint="omit it for no limit")
        if self.batch_rps <= 0 or self.batch_phase_s < 0:
            raise ConfigError(
                f"batch_rps must be > 0 and batch_phase_s >= 0, got {self.batch_rps}, {self.batch_phase_s}"
            )
        if self.batch_token_limit is not None and self.batch_token_limit < 1:
            raise ConfigError(f"batch_token_limit must be at least 1, got {self.batch_token_limit}")
        if self.batch_fail_every < 0 or self.batch_expire_every < 0:
            raise ConfigError("batch_fail_every and batch_expire_every must be >= 0 (0 = never)")
        for name in ("error_rate", "dup_rate", "batch_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be within 0..1, got {getattr(self, name)}")
        unknown = set(self.faults) - set(FAULT_KINDS)
        if unknown:
            raise ConfigError(f"unknown fault kind(s) {sorted(unknown)}", hint=f"use one of {', '.join(FAULT_KINDS)}")
        rates = self.fault_rates()
        if any(r < 0 for r in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
            raise ConfigError(f"fault rates must be >= 0 and sum to at most 1, got {rates}")
        if self.dup_ring < 1:
            raise ConfigError(f"dup_ring must be at least 1, got {self.dup_ring}")
        if not self.model:
            raise ConfigError("the simulator needs a model name", hint="pass --model sim")

    def fault_rates(self) -> dict[str, float]:
        """The probability of each fault kind: ``error_rate`` split evenly, then ``faults`` applied."""
        share = self.error_rate / len(FAULT_KINDS)
        rates = dict.fromkeys(FAULT_KINDS, share)
        rates.update(self.faults)
        return rates
