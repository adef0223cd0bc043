"""``corpusforge serve-sim``: run the OpenAI-compatible simulator until Ctrl-C."""

from __future__ import annotations

import argparse

from ..errors import ConfigError

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
    parser.add_argument("--require-key", default=None, metavar="KEY", help="answer 401 unless 'Bearer KEY' is sent")
    parser.add_argument("--seed", type=int, default=0, help="seed for deterministic output")


def run(args: argparse.Namespace) -> int:
    from ..sim.config import SimConfig
    from ..sim.process import serve_forever

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be within 0..65535, got {args.port}")
    cfg = SimConfig(
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
        require_key=args.require_key,
        seed=args.seed,
    )
    serve_forever(cfg, args.host, args.port)
    return 0
