"""A training run: its options, building it from the engine and the data, the flat loop, and
validation on held-out photos."""
