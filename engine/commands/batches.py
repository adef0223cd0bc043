"""``corpusforge batches OUT [--cancel] [--delete-files]``: a run's batch jobs, from its ledger.

``--cancel`` cancels the batches still running; ``--delete-files`` deletes at
the provider the files of batches whose results are on disk (the uploaded
input, the output and error files) that a run kept (``--keep-batch-files``) or
could not delete. Both record what they did in the ledger.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import aio
from ..errors import ConfigError

NAME = "batches"
HELP = "list a run's batch jobs (generate --batch); --cancel cancels those still running, --delete-files cleans up"
DESCRIPTION = (
    "List the batch input files of the run in OUT with their batch id, status, request counts and provider files "
    "left, as the run's ledger (OUT/batches/ledger.jsonl) records them. --cancel asks the provider (the run's "
    "--base-url, key from $OPENAI_API_KEY or --api-key-env) to cancel every batch still running; `generate --batch "
    "--resume` then collects what they finished. --delete-files deletes the provider files of batches whose results "
    "are on disk (kept with --keep-batch-files, or a deletion that failed)."
)
COLUMNS = ("file", "batch_id", "status", "requests", "completed", "failed", "phase", "files_left")
_NUMERIC = ("requests", "completed", "failed", "files_left")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT", help="run directory")
    parser.add_argument("--cancel", action="store_true", help="cancel the batches still running")
    parser.add_argument(
        "--delete-files",
        action="store_true",
        help="delete at the provider the files of batches whose results are on disk (files_left)",
    )
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    parser.add_argument(
        "--json", action="store_true", help="print JSON lines instead of a table (with the file ids left)"
    )


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=True, header_style="bold")
    for name in COLUMNS:
        table.add_column(name, justify="right" if name in _NUMERIC else "left")
    for row in rows:
        table.add_row(*(str(row.get(k, "")) for k in COLUMNS))
    Console(file=sys.stdout).print(table)


def _provider_config(out: Path, key_env: str) -> Any:
    from ..config import ProviderConfig
    from ._launch import api_key_from_env

    manifest = json.loads((out / "manifest.json").read_text())
    provider = manifest.get("provider") or {}
    return ProviderConfig(
        base_url=str(provider.get("base_url", "")),
        model=str(provider.get("model", "")),
        api_key=api_key_from_env(key_env),
    )


async def _cancel(out: Path, key_env: str, rows: list[dict[str, Any]]) -> list[str]:
    from ..batch.client import BatchClient
    from ..providers.openai import OpenAIProvider, make_session

    cfg = _provider_config(out, key_env)
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


async def _delete(out: Path, key_env: str) -> Any:
    """Delete the provider files of every ingested batch file still holding some; the session's tally."""
    from ..batch.cleanup import Deletions, delete_files
    from ..batch.client import BatchClient
    from ..batch.ledger import Ledger
    from ..providers.openai import OpenAIProvider, make_session

    cfg = _provider_config(out, key_env)
    tally = Deletions()
    async with make_session(cfg) as session:
        client = BatchClient(OpenAIProvider(session, cfg))
        with Ledger(out / "batches") as ledger:
            for f in ledger.undeleted():
                await delete_files(client, f, ledger.append, tally)
    return tally


def _rows(directory: Path) -> tuple[list[dict[str, Any]], int]:
    from ..batch.ledger import Ledger

    with Ledger(directory) as ledger:
        rows = [{**f.row(), "file_ids_left": f.undeleted} for f in ledger.files.values()]
        left = sum(len(f.undeleted) for f in ledger.files.values())
    return rows, left


def run(args: argparse.Namespace) -> int:
    directory = args.out / "batches"
    if not (directory / "ledger.jsonl").exists():
        what = "does not exist" if not args.out.exists() else "has no batches (it was not run with --batch)"
        raise ConfigError(f"{args.out} {what}", hint="pass the --out of a `generate --batch` run")
    rows, left = _rows(directory)
    code = 0
    if args.cancel:
        cancelled = aio.run(_cancel(args.out, args.api_key_env, rows))
        print(
            f"cancelled {len(cancelled)} batch(es); `generate ... --batch --resume` collects what they finished",
            file=sys.stderr,
        )
    if args.delete_files and left:
        tally = aio.run(_delete(args.out, args.api_key_env))
        rows, left = _rows(directory)
        print(f"deleted {tally.deleted} provider file(s); {left} left", file=sys.stderr)
        if tally.first_error is not None:
            print(f"corpusforge: warning: {tally.first_error}", file=sys.stderr)
            code = 1
    _print(rows, args.json)
    if left and not args.delete_files:
        print(
            f"{left} provider file(s) of batches already on disk are not deleted: "
            f"`corpusforge batches {args.out} --delete-files` deletes them",
            file=sys.stderr,
        )
    return code
