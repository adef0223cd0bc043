"""Full fine-tuning of the packaged MiniLM, for when accuracy matters more than seconds.

``train`` fine-tunes all-MiniLM-L6-v2 with a fresh classification head in a plain
torch loop (AdamW, linear decay, length-shuffled batches padded per batch);
``export`` saves it and converts it to ONNX with optimum (in a subprocess,
offline, like the encoder export); ``finetune`` does both. A saved model is a
directory::

    model.onnx        input_ids, attention_mask, token_type_ids -> logits (batch, n_labels)
    labels.json       class names, in the order of the logits
    finetune.json     max_length, epochs, seed
    tokenizer.json    (+ vocab and configs)

``FinetunedClassifier`` runs it with onnxruntime, batched and dynamically padded.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ConfigError, DataError

from .batching import load_tokenizer, tokenize
from .export import optimum_export, source_dir
from .runtime import ort_session, run_session

__all__ = ["FinetunedClassifier", "export", "finetune", "train"]

LOGITS_OUTPUT = "logits"
DEFAULT_EPOCHS = 1
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 5e-5
DEFAULT_MAX_LENGTH = 128


def train(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    max_length: int = DEFAULT_MAX_LENGTH,
    seed: int = 0,
    class_weight: str | None = None,
) -> tuple[Any, Any, list[str]]:
    """Fine-tune the packaged MiniLM on ``texts``; returns ``(torch model, hf tokenizer, label names)``.

    ``class_weight="balanced"`` weights the loss by inverse class frequency; by default every example counts once.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    if len(texts) != len(labels) or not texts:
        raise DataError(f"need as many labels as texts, and some texts (got {len(texts)}, {len(labels)})")
    if epochs < 1 or batch_size < 1:
        raise ConfigError("epochs and batch_size must be >= 1")
    if class_weight not in (None, "balanced"):
        raise ConfigError(f"unknown class_weight {class_weight!r}", hint="use 'balanced' or None")
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count() or 1)
    src = source_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(src), local_files_only=True)  # type: ignore[no-untyped-call]
    model = AutoModelForSequenceClassification.from_pretrained(
        str(src),
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id=index,
        local_files_only=True,
    )
    y = torch.tensor([index[label] for label in labels])
    counts = torch.bincount(y, minlength=len(names)).clamp(min=1).float()
    weight = len(labels) / (len(names) * counts) if class_weight == "balanced" else None
    loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    steps = epochs * -(-len(texts) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)  # type: ignore[no-untyped-call]
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(texts), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            pos = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in pos], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            loss = loss_fn(model(**batch).logits, y[pos])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    model.eval()
    return model, tokenizer, names


def export(model: Any, tokenizer: Any, labels: Sequence[str], out_dir: str | Path, **meta: Any) -> Path:
    """Save the fine-tuned ``model`` and export it to ``out_dir/model.onnx`` (with tokenizer and labels)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="finetuned-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        optimum_export(Path(tmp), out, task="text-classification", what="the fine-tuned model")
    (out / "labels.json").write_text(json.dumps(list(labels), indent=2) + "\n")
    (out / "finetune.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def finetune(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    max_length: int = DEFAULT_MAX_LENGTH,
    seed: int = 0,
    class_weight: str | None = None,
    out_dir: str | Path,
) -> Path:
    """Fine-tune on ``texts``/``labels`` and write the ONNX classifier to ``out_dir``."""
    model, tokenizer, names = train(
        texts,
        labels,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_length=max_length,
        seed=seed,
        class_weight=class_weight,
    )
    meta = {
        "max_length": max_length,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "class_weight": class_weight or "none",
    }
    return export(model, tokenizer, names, out_dir, **meta)


class FinetunedClassifier:
    """A fine-tuned model exported by ``finetune``, run with onnxruntime."""

    def __init__(self, session: Any, tokenizer: Any, labels: list[str], meta: dict[str, Any] | None = None) -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.labels = labels
        #: How it was trained (``finetune.json``): epochs, batch size, learning rate, max length, class weight.
        self.meta = meta or {}

    @classmethod
    def load(cls, directory: str | Path, *, threads: int | None = None) -> FinetunedClassifier:
        d = Path(directory)
        missing = [n for n in ("model.onnx", "labels.json", "tokenizer.json") if not (d / n).exists()]
        if missing:
            raise DataError(f"{d} is not a fine-tuned model (missing {', '.join(missing)})")
        meta_file = d / "finetune.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        labels = [str(x) for x in json.loads((d / "labels.json").read_text())]
        tokenizer = load_tokenizer(d, int(meta.get("max_length", DEFAULT_MAX_LENGTH)))
        return cls(ort_session(d / "model.onnx", threads), tokenizer, labels, meta)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for pos, feeds in tokenize(self.tokenizer, texts).batches(batch_size):
            (logits,) = run_session(self.session, feeds, [LOGITS_OUTPUT])
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs[pos] = z / z.sum(axis=1, keepdims=True)
        return probs

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[str]:
        if not texts:
            return []
        return [self.labels[i] for i in self.predict_proba(texts, batch_size).argmax(axis=1)]
