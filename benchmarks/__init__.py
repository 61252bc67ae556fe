"""Efficiency benchmarks reproducing the paper's Table 6, batch throughput, Figures 7 and 8, and the
GPU campaign, in rooms by purpose (decision 82):

- ``cpu/``: the CPU benchmarks, what ``pytest benchmarks/`` measures (the paper-style pipelines,
  problem sizes, the suite's ``benchmark`` fixture and run file, the machine's description, the
  child-process measurements) and the commands measuring one thing (``label_install``,
  ``onnx_latency``, ``op_counts``, ``sign_stability``, ``waymo_v2_convert_speed``);
- ``gpu_campaign/``: the GPU campaign's sections and their records (``python -m benchmarks.gpu``);
- ``report_writers/``: the sections of ``RESULTS.md`` (``python -m benchmarks.report``);
- ``tests/``: the benchmark tests (``test_bench_*.py``) and the tests of the rooms above;
- ``studies/``: the kept study runs that ``STUDY.md`` and ``docs/studies.md`` cite.

``gpu.py`` and ``report.py`` are the two commands, thin modules on top; ``conftest.py`` sets up the
suite; ``RESULTS.md`` and ``STUDY.md`` are the pages. ``cpu`` imports neither of the other rooms;
``report_writers`` imports ``cpu``; ``gpu_campaign`` imports both.

Run ``pytest benchmarks/`` for the smoke run (tiny sizes, once) and ``pytest benchmarks/ --benchmark``
for the full measurement; ``python -m benchmarks.report`` writes ``benchmarks/RESULTS.md``. The
modules' former paths (``benchmarks.table6``, ``python -m benchmarks.onnx_latency``) still import
and run: :data:`MOVED`, through ``train.runtime.moved_modules``.
"""
from train.runtime.moved_modules import alias_moved_modules

# Old module -> where it moved into the rooms.
MOVED: dict[str, str] = {
    "benchmarks.gpu_record": "benchmarks.gpu_campaign.record",
    "benchmarks.gpu_sections": "benchmarks.gpu_campaign.sections",
    "benchmarks.gpu_cuda_tests": "benchmarks.gpu_campaign.cuda_tests",
    "benchmarks.gpu_models": "benchmarks.gpu_campaign.models",
    "benchmarks.gpu_topo": "benchmarks.gpu_campaign.topo",
    "benchmarks.gpu_training": "benchmarks.gpu_campaign.training",
    "benchmarks.report_paper": "benchmarks.report_writers.paper",
    "benchmarks.report_predict": "benchmarks.report_writers.predict",
    "benchmarks.report_steps": "benchmarks.report_writers.steps",
    "benchmarks.report_tables": "benchmarks.report_writers.tables",
    "benchmarks.clouds": "benchmarks.cpu.clouds",
    "benchmarks.host_work": "benchmarks.cpu.host_work",
    "benchmarks.isolated": "benchmarks.cpu.isolated",
    "benchmarks.label_install": "benchmarks.cpu.label_install",
    "benchmarks.machine": "benchmarks.cpu.machine",
    "benchmarks.measure": "benchmarks.cpu.measure",
    "benchmarks.naive_rips": "benchmarks.cpu.naive_rips",
    "benchmarks.onnx_latency": "benchmarks.cpu.onnx_latency",
    "benchmarks.op_counts": "benchmarks.cpu.op_counts",
    "benchmarks.paper_pipeline": "benchmarks.cpu.paper_pipeline",
    "benchmarks.pool_start": "benchmarks.cpu.pool_start",
    "benchmarks.predict_profile": "benchmarks.cpu.predict_profile",
    "benchmarks.sizes": "benchmarks.cpu.sizes",
    "benchmarks.step_ops": "benchmarks.cpu.step_ops",
    "benchmarks.step_profile": "benchmarks.cpu.step_profile",
    "benchmarks.table6": "benchmarks.cpu.table6",
    "benchmarks.timing": "benchmarks.cpu.timing",
    "benchmarks.topo_split": "benchmarks.cpu.topo_split",
    "benchmarks.waymo_v2_convert_speed": "benchmarks.cpu.waymo_v2_convert_speed",
    "benchmarks.distill_cost": "benchmarks.cpu.distill_cost",
    "benchmarks.sign_stability": "benchmarks.cpu.sign_stability",
}
alias_moved_modules(MOVED)
