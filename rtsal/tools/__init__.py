"""Supporting tools: training the reference classifiers (:mod:`~rtsal.tools.classifier`; their
architectures are the registry's), the canvas benchmark generator, training-set reports.

It may import the foundation, the engine, the registry, data, methods, metrics and inference;
not training."""
