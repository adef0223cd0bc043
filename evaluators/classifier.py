"""Encoder and head as one ONNX model that any onnxruntime user can run.

The head's dense layers are appended to the encoder graph (which already ends
in mean pooling and L2 normalisation) as MatMul + Add (+ Relu) nodes and a
Softmax. The model takes ``input_ids``, ``attention_mask`` (and
``token_type_ids`` when the encoder has it) and returns ``probabilities``
``(batch, n_labels)`` and ``embeddings`` ``(batch, dim)``. A saved classifier is a
directory::

    model.onnx        the whole graph
    labels.json       class names, in the order of the probabilities
    classifier.json   encoder variant, max_seq_length, head kind, versions
    tokenizer.json    (+ vocab and configs) the fast tokenizer the encoder was trained with
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import DataError

from .encoder import (
    DEFAULT_VARIANT,
    EMBEDDINGS_OUTPUT,
    TOKENIZER_FILES,
    Encoder,
    load_tokenizer,
    ort_session,
    run_session,
    tokenize,
)
from .head import Head, train_head

__all__ = ["PROBABILITIES_OUTPUT", "Classifier", "build_graph"]

PROBABILITIES_OUTPUT = "probabilities"
_FORMAT = 1


def build_graph(encoder_model: Path, head: Head) -> Any:
    """The encoder's ONNX graph with ``head`` appended: outputs ``probabilities`` and ``embeddings``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(encoder_model))
    graph = model.graph
    current = EMBEDDINGS_OUTPUT
    for i, (w, b) in enumerate(head.layers):
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.asarray(w, dtype=np.float32), f"head_w{i}"),
                numpy_helper.from_array(np.asarray(b, dtype=np.float32), f"head_b{i}"),
            ]
        )
        graph.node.extend(
            [
                helper.make_node("MatMul", [current, f"head_w{i}"], [f"head_mm{i}"]),
                helper.make_node("Add", [f"head_mm{i}", f"head_b{i}"], [f"head_z{i}"]),
            ]
        )
        current = f"head_z{i}"
        if i < len(head.layers) - 1:
            graph.node.append(helper.make_node("Relu", [current], [f"head_relu{i}"]))
            current = f"head_relu{i}"
    graph.node.append(helper.make_node("Softmax", [current], [PROBABILITIES_OUTPUT], axis=-1))
    emb = next(o for o in graph.output if o.name == EMBEDDINGS_OUTPUT)
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info(PROBABILITIES_OUTPUT, TensorProto.FLOAT, ["batch_size", len(head.labels)]),
            emb,
        ]
    )
    return model


class Classifier:
    """A text classifier backed by one onnxruntime session."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        labels: list[str],
        config: dict[str, Any],
        *,
        source_dir: Path,
        head: Head | None = None,
        threads: int | None = None,
    ) -> None:
        self.model = model  # an onnx ModelProto, or the Path of a saved model.onnx
        self.tokenizer = tokenizer
        self.labels = labels
        self.config = config
        self.head = head
        self._source_dir = source_dir
        self.session = ort_session(model if isinstance(model, Path) else model.SerializeToString(), threads)

    @classmethod
    def from_head(cls, encoder: Encoder, head: Head, *, threads: int | None = None) -> Classifier:
        """Join a trained head to the encoder it was trained on."""
        config = {
            "format": _FORMAT,
            "encoder_variant": encoder.variant,
            "max_seq_length": encoder.max_seq_length,
            "dim": encoder.dim,
            "head": head.kind,
            "encoder_dir": encoder.directory.name,
        }
        return cls(
            build_graph(encoder.model_file, head),
            encoder.tokenizer,
            list(head.labels),
            config,
            source_dir=encoder.directory,
            head=head,
            threads=threads,
        )

    @classmethod
    def train(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        variant: str = DEFAULT_VARIANT,
        head: str = "logreg",
        class_weight: str | None = None,
        seed: int = 0,
        encoder: Encoder | None = None,
        batch_size: int = 64,
        progress: Callable[[int, int], None] | None = None,
    ) -> Classifier:
        """Embed ``texts``, fit a head on ``labels`` and build the one-graph classifier."""
        enc = encoder if encoder is not None else Encoder.load(variant)
        X = enc.embed(list(texts), batch_size=batch_size, progress=progress)
        fitted = train_head(X, list(labels), kind=head, class_weight=class_weight, seed=seed)
        return cls.from_head(enc, fitted)

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if isinstance(self.model, Path):
            if self.model.resolve() != (out / "model.onnx").resolve():
                shutil.copy2(self.model, out / "model.onnx")
        else:
            import onnx

            onnx.save(self.model, str(out / "model.onnx"))
        for name in TOKENIZER_FILES:
            src = self._source_dir / name
            if src.exists() and src.resolve() != (out / name).resolve():
                shutil.copy2(src, out / name)
        (out / "labels.json").write_text(json.dumps(self.labels, indent=2) + "\n")
        (out / "classifier.json").write_text(json.dumps(self.config, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path, *, threads: int | None = None) -> Classifier:
        d = Path(directory)
        needed = ["model.onnx", "labels.json", "classifier.json", "tokenizer.json"]
        missing = [n for n in needed if not (d / n).exists()]
        if missing:
            raise DataError(
                f"{d} is not a saved classifier (missing {', '.join(missing)})",
                hint="pass the model/ directory that `corpusforge eval` wrote",
            )
        config = json.loads((d / "classifier.json").read_text())
        labels = [str(x) for x in json.loads((d / "labels.json").read_text())]
        tokenizer = load_tokenizer(d, int(config["max_seq_length"]))
        return cls(d / "model.onnx", tokenizer, labels, config, source_dir=d, threads=threads)

    def run(
        self, texts: Sequence[str], batch_size: int = 64, progress: Callable[[int, int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, embeddings)`` for ``texts``, in order."""
        n = len(texts)
        probs = np.zeros((n, len(self.labels)), dtype=np.float32)
        embs = np.zeros((n, int(self.config.get("dim", 384))), dtype=np.float32)
        done = 0
        for pos, feeds in tokenize(self.tokenizer, texts).batches(batch_size):
            p, e = run_session(self.session, feeds, [PROBABILITIES_OUTPUT, EMBEDDINGS_OUTPUT])
            probs[pos], embs[pos] = p, e
            done += len(pos)
            if progress is not None:
                progress(done, n)
        return probs, embs

    def predict_proba(
        self, texts: Sequence[str], batch_size: int = 64, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        return self.run(texts, batch_size, progress)[0]

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[str]:
        if not texts:
            return []
        return [self.labels[i] for i in self.predict_proba(texts, batch_size).argmax(axis=1)]
