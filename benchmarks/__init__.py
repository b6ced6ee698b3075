"""The project's own performance study (``python performance_test.py``), beside the package it measures.

It imports tgatunet as any user would. Every benchmark that times, counts or profiles a training
step runs the real step of :class:`~tgatunet.train.module.TGATUNetModule` through Lightning
(:mod:`benchmarks.training`); each section writes its figures to ``OUT/results.json``
(:mod:`benchmarks.results`), and :mod:`benchmarks.guide_report` grades them against the
performance guide's promises in ``OUT/report.md``.
"""
