"""Explaining images: the explainer (one encoder pass, one decoder pass per class), files and
video, overlays, fusion, export to TorchScript and ONNX."""

DEFAULT_BATCH_SIZE = 16  # images per forward pass (the library's and rtsal explain's default)
