"""Supporting tools: reference classifiers for small data sets, the canvas benchmark generator,
training-set reports."""
