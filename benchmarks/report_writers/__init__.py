"""The writers of ``benchmarks/RESULTS.md`` (``python -m benchmarks.report``): ``results`` (the
page's frame and ``--update``), ``paper`` (the sections beside the paper's numbers), ``steps`` (the
training step), ``predict`` (inference), all made of ``tables``. Imports ``benchmarks.cpu`` (what
a section describes); the GPU campaign imports it.
"""
