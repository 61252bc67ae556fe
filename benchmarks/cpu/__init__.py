"""The CPU benchmarks: what ``pytest benchmarks/`` measures and the pieces it measures with.

Measured pipelines: ``table6`` (paper Table 6's methods) on ``paper_pipeline``, ``naive_rips`` and
``measure``; ``step_profile``, ``step_ops``, ``topo_split``, ``host_work`` (one training step, by
stage, by op, by term, on the host); ``pool_start``; ``predict_profile``; ``distill_cost`` (the
condensation methods' time and memory). Shared: ``clouds`` (synthetic feature clouds), ``sizes``
(smoke and paper sizes), ``timing`` (the suite's ``benchmark`` fixture and run file), ``machine``
(what a run measured on), ``isolated`` (killable child-process measurements). Commands measuring one thing: ``isotropic_h1``, ``label_install``,
``onnx_latency``, ``op_counts``, ``sign_stability``, ``waymo_v2_convert_speed``. The GPU campaign reruns some of these
on a GPU. Imports ``fast``, ``reference`` and ``train``, no other room of ``benchmarks``.
"""
