"""rtsal inside other libraries' evaluation code: ``quantus`` gives Quantus
(https://github.com/understandable-machine-intelligence-lab/Quantus) an ``explain_func`` that runs
the masking model or any registered method (docs/api.md, "Quantus").

It may import every package below the batch runs (foundation, engine, registry, data, methods,
metrics, inference, training, tools); only the package root names it (lazily)."""
