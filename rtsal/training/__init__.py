"""A training run: its options, building it from the engine and the data, the flat loop, and
validation on held-out photos and on photos with boxes.

It may import the foundation, the engine, the registry, data, methods, metrics and inference;
not tools."""
