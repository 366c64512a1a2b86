"""rtsal inside other libraries' evaluation code: ``quantus`` gives Quantus
(https://github.com/understandable-machine-intelligence-lab/Quantus) an ``explain_func`` that runs
the masking model or any registered method (docs/api.md, "Quantus")."""
