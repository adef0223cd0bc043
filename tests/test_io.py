"""engine.io: reading rows with one-line errors naming file, line and fix; atomic writes that never leave half a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import ConfigError, DataError
from engine.io import (
    atomic_write_json,
    atomic_write_rows,
    atomic_write_text,
    describe_columns,
    parse_yaml,
    read_jsonl,
    read_rows,
    read_yaml,
)

ROOT = Path(__file__).resolve().parent.parent
ROWS = [{"text": "café au lait", "label": "food"}, {"text": "a goal", "label": "sport"}]


def _one_line(exc: pytest.ExceptionInfo[Exception]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# -- reading ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet"])
def test_every_format_reads_the_same_rows(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rows{suffix}"
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif suffix in (".csv", ".tsv"):
        sep = "\t" if suffix == ".tsv" else ","
        path.write_text("text" + sep + "label\n" + "".join(f"{r['text']}{sep}{r['label']}\n" for r in ROWS))
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")  # a blank last line is fine
    assert list(read_rows(path)) == ROWS


def test_csv_with_bom_quotes_and_embedded_newlines(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_bytes('\ufefftext,label\n"line one\nline two, with comma",a\n'.encode())
    assert list(read_rows(path)) == [{"text": "line one\nline two, with comma", "label": "a"}]


def test_non_utf8_names_line_byte_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(ROWS[1]).encode() + b"\n"
    path.write_bytes(good * 2 + '{"text": "caf\u00e9", "label": "food"}\n'.encode("latin-1"))
    with pytest.raises(DataError) as info:
        list(read_rows(path))
    line = _one_line(info)
    offset = 2 * len(good) + len(b'{"text": "caf')
    assert f"{path}:3:" in line and "0xe9" in line and f"byte {offset}" in line
    assert "UTF-8" in info.value.hint and "iconv" in info.value.hint


def test_malformed_jsonl_line_reports_its_real_line_number(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"t{i}", "label": "a"}) for i in range(300)]
    lines[150] = '{"text": broken'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        list(read_rows(path))
    line = _one_line(info)
    assert f"{path}:151:" in line and "column 10" in line and "line 1 column" not in line
    assert "line 151" in info.value.hint


def test_a_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r":2: a JSON list, not an object"):
        list(read_jsonl(path))


def test_torn_tail_is_skipped_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"text": "half wri')
    assert list(read_jsonl(path, tolerate_torn_tail=True)) == [ROWS[0]]
    with pytest.raises(DataError, match=":2: not valid JSON"):
        list(read_jsonl(path))
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"text": "broken\n' + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(DataError, match=":2: not valid JSON"):  # a bad line in the middle is damage, not a tear
        list(read_jsonl(path, tolerate_torn_tail=True))


def test_binary_csv_is_one_short_line(tmp_path: Path) -> None:
    import random

    rng = random.Random(1)
    path = tmp_path / "binary.csv"
    path.write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    with pytest.raises(DataError) as info:
        list(read_rows(path))
    line = _one_line(info)
    assert line.startswith(f"{path}:1: ") and len(line) - len(str(path)) < 200 and ("binary" in line or "UTF-8" in line)


def test_ragged_csv_row_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("text,label\ngood,a\ngood, really,b\n")
    with pytest.raises(DataError, match=r"ragged.csv:3: 3 fields, but the header has 2") as info:
        list(read_rows(path))
    assert "quote" in info.value.hint


def test_csv_header_problems(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="no header row"):
        list(read_rows(empty))
    twice = tmp_path / "twice.csv"
    twice.write_text("text,text,label\na,b,c\n")
    with pytest.raises(DataError, match="text twice"):
        list(read_rows(twice))


def test_required_fields_are_checked_with_printable_columns(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("words,label\nhi,a\n")
    with pytest.raises(DataError, match=r"row 1 has no column 'text' \(columns: words, label\)"):
        list(read_rows(path, fields=["text", "label"]))
    assert describe_columns(["\x01\x02" + "x" * 40, *map(str, range(20))]).startswith("??xxx")
    assert describe_columns(map(str, range(20))).endswith("and 12 more")


def test_missing_unknown_and_bad_parquet_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        list(read_rows(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="is a directory"):
        list(read_rows(tmp_path))
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="unknown file type .txt"):
        list(read_rows(tmp_path / "x.txt"))
    (tmp_path / "fake.parquet").write_text("text,label\n")
    with pytest.raises(DataError) as info:
        list(read_rows(tmp_path / "fake.parquet"))
    assert "not a readable Parquet file" in _one_line(info)


# -- YAML ------------------------------------------------------------------------------------------------


def test_yaml_duplicate_key_names_key_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text("name: t\nlabels:\n  pos: good\n  neg: bad\n  pos: again\n")
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    assert _one_line(info).startswith(f"{path}:5:3: duplicate key 'pos'")


def test_yaml_syntax_error_has_line_and_column() -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml("name: x\nlabels: [a, b\n", source="t.yaml")
    assert _one_line(info).startswith("t.yaml:3:1: not valid YAML:")
    with pytest.raises(ConfigError, match=r"t.yaml:2:4: not valid YAML: mapping values"):
        parse_yaml("a: 1\n  b: 2\n", source="t.yaml")


def test_yaml_keeps_safe_semantics() -> None:
    assert parse_yaml("a: &x {p: 1}\nb:\n  <<: *x\n  q: 2\nc: [1, 1]\n", source="s") == {
        "a": {"p": 1},
        "b": {"p": 1, "q": 2},
        "c": [1, 1],
    }
    assert parse_yaml("", source="s") is None
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        parse_yaml("x: !!python/object/apply:os.system [echo]\n", source="s")


def test_yaml_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes("name: t\ndescription: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"t.yaml:2: byte 0xe9"):
        read_yaml(path)


# -- atomic writes ---------------------------------------------------------------------------------------


def test_atomic_writes_round_trip_and_leave_no_temp(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_json(tmp_path / "a.json", {"k": "é"})
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8")) == {"k": "é"}
    assert atomic_write_rows(tmp_path / "r.jsonl", iter(ROWS)) == 2
    assert list(read_rows(tmp_path / "r.jsonl")) == ROWS
    rows = [{"text": "a, b", "probs": {"x": 0.5}}, {"text": "c", "extra": 1}]
    assert atomic_write_rows(tmp_path / "r.csv", rows) == 2
    assert list(read_rows(tmp_path / "r.csv")) == [
        {"text": "a, b", "probs": '{"x": 0.5}', "extra": ""},
        {"text": "c", "probs": "", "extra": "1"},
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "r.csv", "r.jsonl", "sub"]


def test_a_failing_writer_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text("old\n")

    def rows():
        yield {"a": 1}
        raise RuntimeError("the producer failed")

    with pytest.raises(RuntimeError):
        atomic_write_rows(path, rows())
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


def test_unwritable_directory_is_a_data_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError) as info:
        atomic_write_text(blocker / "out.json", "{}")
    assert f"cannot write {blocker / 'out.json'}" in _one_line(info)


_FILL_AND_WRITE = """
import os, sys
from pathlib import Path
from engine.errors import DataError
from engine.io import atomic_write_json
out = Path(sys.argv[1])
try:
    atomic_write_json(out, {"payload": "x" * 4_000_000})
except DataError as exc:
    print(str(exc))
    sys.exit(3)
"""


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


def test_full_disk_is_one_line_and_leaves_the_old_file(tmp_path: Path) -> None:
    """A real full filesystem (a 1 MB tmpfs) when we may mount one; the temp file goes, the old file stays."""
    disk = tmp_path / "disk"
    if os.geteuid() != 0 or not _tmpfs(disk, "1m"):
        pytest.skip("needs root to mount a tmpfs")
    try:
        (disk / "stats.json").write_text('{"old": true}\n')
        proc = subprocess.run(
            [sys.executable, "-c", _FILL_AND_WRITE, str(disk / "stats.json")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 3, proc.stderr
        line = proc.stdout.strip()
        assert "\n" not in line and "No space left on device" in line and "free disk space" in line
        assert (disk / "stats.json").read_text() == '{"old": true}\n'
        assert [p.name for p in disk.iterdir()] == ["stats.json"]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_file_size_limit_is_one_line_and_leaves_the_old_file(tmp_path: Path) -> None:
    """The same path on any machine: a ulimit on file size makes the write fail with EFBIG."""
    (tmp_path / "stats.json").write_text('{"old": true}\n')
    code = "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    code += "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))\n" + _FILL_AND_WRITE
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "stats.json")], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip().startswith(f"cannot write {tmp_path / 'stats.json'}: File too large")
    assert (tmp_path / "stats.json").read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]
