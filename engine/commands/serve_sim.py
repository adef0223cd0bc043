"""``corpusforge serve-sim``: run the OpenAI-compatible simulator until Ctrl-C."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..sim.config import SimConfig

NAME = "serve-sim"
HELP = "run a local OpenAI-compatible simulator (latency, rate limits, faults) for tests and dry runs"
DESCRIPTION = (
    "Serve an OpenAI-compatible API on HOST:PORT that answers with random but well-formed data. "
    "Prints the base URL as its first line (use --port 0 for any free port) and runs until Ctrl-C or SIGTERM."
)


def _fault(value: str) -> tuple[str, float]:
    kind, sep, rate = value.partition("=")
    try:
        if not sep:
            raise ValueError
        return kind.strip(), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE like 500=0.01, got {value!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (0 = any free port)")
    parser.add_argument("--model", default="sim", help="model name /v1/models reports")
    parser.add_argument("--strict-model", action="store_true", help="answer 404 model_not_found for other models")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="base latency of every response")
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="extra delay per output token")
    parser.add_argument("--rpm-limit", type=float, default=None, help="requests per minute before 429")
    parser.add_argument("--tpm-limit", type=float, default=None, help="tokens per minute before 429")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fault probability, split across all kinds")
    parser.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        metavar="KIND=RATE",
        help="probability of one fault kind (500, 503, timeout, drop, malformed, truncated); repeatable",
    )
    parser.add_argument("--hang-s", type=float, default=60.0, help="how long a 'timeout' fault hangs")
    parser.add_argument("--dup-rate", type=float, default=0.0, help="share of texts that near-duplicate earlier ones")
    parser.add_argument(
        "--dup-ring", type=int, default=1024, help="how many recent texts a near-duplicate may copy from"
    )
    parser.add_argument("--require-key", default=None, metavar="KEY", help="answer 401 unless 'Bearer KEY' is sent")
    parser.add_argument("--seed", type=int, default=0, help="seed for deterministic output")
    batch = parser.add_argument_group("Batch API (/v1/files, /v1/batches)")
    batch.add_argument("--no-batch-api", action="store_true", help="answer 404 on the Batch API routes")
    batch.add_argument("--batch-rps", type=float, default=5000.0, help="lines a batch executes per second")
    batch.add_argument(
        "--batch-phase-s", type=float, default=0.05, help="seconds a batch spends validating, finalizing"
    )
    batch.add_argument(
        "--batch-token-limit", type=int, default=None, help="enqueued prompt tokens before token_limit_exceeded"
    )
    batch.add_argument(
        "--batch-token-limit-on-create",
        action="store_true",
        help="refuse a batch over the limit at creation (HTTP 400) instead of failing it in validation",
    )
    batch.add_argument("--batch-fail-every", type=int, default=0, metavar="K", help="every K-th batch fails validation")
    batch.add_argument(
        "--batch-expire-every", type=int, default=0, metavar="K", help="every K-th batch expires half done"
    )
    batch.add_argument(
        "--batch-error-rate", type=float, default=0.0, help="share of batch lines that fail (error file)"
    )


def sim_config(args: argparse.Namespace) -> SimConfig:
    """The simulator's config from the parsed flags (the inverse of ``engine.sim.cli_args``)."""
    from ..sim.config import SimConfig

    return SimConfig(
        model=args.model,
        strict_model=args.strict_model,
        latency_ms=args.latency_ms,
        token_delay_ms=args.token_delay_ms,
        rpm_limit=args.rpm_limit,
        tpm_limit=args.tpm_limit,
        error_rate=args.error_rate,
        faults=dict(args.fault),
        hang_s=args.hang_s,
        dup_rate=args.dup_rate,
        dup_ring=args.dup_ring,
        require_key=args.require_key,
        seed=args.seed,
        batch_api=not args.no_batch_api,
        batch_rps=args.batch_rps,
        batch_phase_s=args.batch_phase_s,
        batch_token_limit=args.batch_token_limit,
        batch_token_limit_on_create=args.batch_token_limit_on_create,
        batch_fail_every=args.batch_fail_every,
        batch_expire_every=args.batch_expire_every,
        batch_error_rate=args.batch_error_rate,
    )


def run(args: argparse.Namespace) -> int:
    from ..sim.process import serve_forever

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be within 0..65535, got {args.port}")
    serve_forever(sim_config(args), args.host, args.port)
    return 0
