"""Batch runs: work over many files that survives a kill and splits over processes.

``rtsal explain`` over files and folders (:mod:`~rtsal.runs.explain`, writing what
:mod:`~rtsal.runs.outputs` says), ``rtsal metric`` and ``rtsal localize`` over a data set
(:mod:`~rtsal.runs.scoring`: reading the samples, building the explainer, scoring;
:mod:`~rtsal.runs.records`: the records files, summaries and shards joined), journals of
finished work (:mod:`~rtsal.runs.journal`) and the explain manifest made of them
(:mod:`~rtsal.runs.manifest`), shards (:mod:`~rtsal.runs.shards`), ``rtsal merge``
(:mod:`~rtsal.runs.merge`) and ``rtsal compare`` (:mod:`~rtsal.runs.compare`).

It owns how a run is listed, resumed, sharded and written; what a mask is comes from
:mod:`rtsal.inference`, what a score is from :mod:`rtsal.metrics`. It may import every package
below it (foundation, engine, registry, data, methods, metrics, inference, training, tools);
only the command line imports it."""
