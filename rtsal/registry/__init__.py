"""What plugins feed: the pluggy hooks (``hookimpl`` lives in :mod:`~rtsal.registry.hookspecs`),
plugin collection that fails soft, black boxes and their providers (timm, user code,
checkpoints), the reference classifiers for small data sets that checkpoints hold
(:mod:`~rtsal.registry.classifiers`), class names, explanation methods and black-box weights.

It may import the foundation and the engine."""
