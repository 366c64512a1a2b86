"""Each metric once, per image and accumulated, with its 95 % interval: the saliency metric,
localisation (the paper's error, MaxBoxAcc), faithfulness (pointing game, deletion/insertion),
pixel metrics, intervals and paired tests, and the scorer (:mod:`~rtsal.metrics.scoring`) that
scores one explained image with those same functions and summarises a run's records.

It may import the foundation, the engine, the registry and data; not methods (the explainer it
is handed makes the masks)."""
