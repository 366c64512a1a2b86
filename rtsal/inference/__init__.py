"""Explaining images: the explainer (one encoder pass, one decoder pass per class), the black box
chosen from options, video, overlays, the reading and writing pipeline, folded BatchNorms,
export to TorchScript and ONNX and the ONNX Runtime back end.

It may import the foundation, the engine, the registry, data, methods and metrics."""

DEFAULT_BATCH_SIZE = 16  # images per forward pass (the library's and rtsal explain's default)
