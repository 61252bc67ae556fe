"""The ablation study of ``python -m train.study`` (``ablation``: the paper's tables over seeds),
its budget searches (``budget``), the units it keeps and reuses (``units``), its report with
statistics and plots (``report``), and the diagnostic of the topological term behind
``python -m train.topo_diagnostic`` (``topo_diagnostic``). It may import every room below it
(runtime, option table, ``models``, ``data``, engine, evaluation, runner) and never a command
(decision 49); ``__main__`` is the command ``python -m train.study``.
"""
