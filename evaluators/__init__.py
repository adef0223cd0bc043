"""CPU-only evaluation: ONNX encoder, classifier head, metrics, quality, experiments."""

__all__: list[str] = []
