"""CPU-only evaluation: ONNX encoder, classifier head, metrics, quality, experiments.

The public names of the encoder, head, classifier, metrics and data modules are
re-exported here; ``evaluate`` (the one evaluation service behind ``run``,
``eval`` and ``experiment``), ``clean``, ``prior``, ``quality``, ``grid``,
``experiment`` and ``report`` are imported by their module path. Nothing here imports onnxruntime, torch or transformers
until it is used.
"""

from .classifier import Classifier
from .data import load_records, record_texts, stratified_sample, texts_and_labels
from .encoder import DEFAULT_VARIANT, VARIANTS, Encoder, join_fields
from .head import Head, train_head
from .metrics import accuracy, classification_report, confusion_matrix, macro_f1, per_class

__all__ = [
    "DEFAULT_VARIANT",
    "VARIANTS",
    "Classifier",
    "Encoder",
    "Head",
    "accuracy",
    "classification_report",
    "confusion_matrix",
    "join_fields",
    "load_records",
    "macro_f1",
    "per_class",
    "record_texts",
    "stratified_sample",
    "texts_and_labels",
    "train_head",
]
