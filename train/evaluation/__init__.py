"""Evaluation and reporting: full-resolution evaluation with test-time augmentation, latency and
the results tables (``evaluate``), the validation passes made during training (``validation``),
IoU counting (``metrics``), the run's pictures (``plots``) and the cost of a model (``cost``). It
may import the runtime, the option table, ``models``, ``data`` and the engine, and never the
runner, the study or a command (decision 49).
"""
