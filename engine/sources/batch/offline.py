"""The offline round trip: export the plan's requests as input files, import output files written elsewhere.

An exported file is recorded as ``exported`` and never uploaded; its requests
stay held until ``import`` brings their results (``vllm run-batch`` writes the
Batch API's output format). A results file is copied into the run directory
(fsynced) and recorded before it is read, so an import killed midway is
finished by importing again, minus what the journal already has.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...batch.results import read_outcomes
from .submit import Submitting

__all__ = ["Offline", "copy_synced"]


def copy_synced(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` through a temporary file, fsynced, renamed into place."""
    tmp = dest.with_name(dest.name + ".tmp")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        while block := fin.read(1 << 20):
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())
    os.replace(tmp, dest)


class Offline(Submitting):
    def export(self) -> list[Path]:
        """Write the plan's requests as input files for another machine; the paths written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        paths = []
        with self.ledger:
            self._recover()
            while (f := self._write()) is not None:
                self._log("exported", file=f.name)
                paths.append(self.dir / f"{f.name}.jsonl")
        return paths

    async def import_results(self, results: list[Path]) -> dict[str, int]:
        """Ingest output files of exported requests through the chain; counts of lines used and skipped."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.ledger:
            self._recover()
            waiting = {f.name: self.pending.get(f.name, {}) for f in self.ledger.active() if f.phase == "external"}
            pending = {rid: req for reqs in waiting.values() for rid, req in reqs.items()}
            before = len(pending)
            copies = []
            for path in results:
                index = len(list(self.dir.glob("import-*.jsonl"))) + 1
                copy = self.dir / f"import-{index:05d}.jsonl"
                copy_synced(path, copy)
                self._log("imported", path=copy.name, source=str(path))
                copies.append(copy)
            used = 0
            for chunk in read_outcomes(pending, list(copies), self.provider, missing=None):
                used += len(chunk)
                await self._consume(chunk)
            self.run.store.sync()
            for name, reqs in waiting.items():
                if all(rid not in pending for rid in reqs):
                    self._log("ingested", file=name)
            return {"used": used, "still_waiting": before - used}
