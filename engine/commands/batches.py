"""``corpusforge batches OUT [--cancel]``: the batch jobs of a run, from its ledger; cancel the running ones."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import aio
from ..errors import ConfigError

NAME = "batches"
HELP = "list a run's batch jobs (generate --batch); --cancel cancels those still running"
DESCRIPTION = (
    "List the batch input files of the run in OUT with their batch id, status and request counts, as the run's "
    "ledger (OUT/batches/ledger.jsonl) records them. --cancel asks the provider (the run's --base-url, key from "
    "$OPENAI_API_KEY or --api-key-env) to cancel every batch still running; `generate --batch --resume` then "
    "collects what they finished."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT", help="run directory")
    parser.add_argument("--cancel", action="store_true", help="cancel the batches still running")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    for name in ("file", "batch_id", "status", "requests", "completed", "failed", "phase"):
        table.add_column(name, justify="right" if name in ("requests", "completed", "failed") else "left")
    for row in rows:
        table.add_row(
            *(str(row.get(k, "")) for k in ("file", "batch_id", "status", "requests", "completed", "failed", "phase"))
        )
    Console(file=sys.stdout).print(table)


async def _cancel(out: Path, key_env: str, rows: list[dict[str, Any]]) -> list[str]:
    from ..batch.client import BatchClient
    from ..config import ProviderConfig
    from ..providers.openai import OpenAIProvider, make_session
    from ._launch import api_key_from_env

    manifest = json.loads((out / "manifest.json").read_text())
    provider = manifest.get("provider") or {}
    cfg = ProviderConfig(
        base_url=str(provider.get("base_url", "")),
        model=str(provider.get("model", "")),
        api_key=api_key_from_env(key_env),
    )
    done = []
    async with make_session(cfg) as session:
        client = BatchClient(OpenAIProvider(session, cfg))
        for row in rows:
            if row["phase"] != "poll" or not row["batch_id"]:
                continue
            info = await client.cancel(row["batch_id"])
            if info is None:  # it ended meanwhile
                continue
            row["status"] = info.status
            done.append(row["batch_id"])
    return done


def run(args: argparse.Namespace) -> int:
    from ..batch.ledger import Ledger

    directory = args.out / "batches"
    if not (directory / "ledger.jsonl").exists():
        what = "does not exist" if not args.out.exists() else "has no batches (it was not run with --batch)"
        raise ConfigError(f"{args.out} {what}", hint="pass the --out of a `generate --batch` run")
    with Ledger(directory) as ledger:
        rows = [f.row() for f in ledger.files.values()]
    if args.cancel:
        cancelled = aio.run(_cancel(args.out, args.api_key_env, rows))
        print(
            f"cancelled {len(cancelled)} batch(es); `generate ... --batch --resume` collects what they finished",
            file=sys.stderr,
        )
    _print(rows, args.json)
    return 0
