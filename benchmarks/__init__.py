"""Efficiency benchmarks reproducing the paper's Table 6, batch throughput, Figures 7 and 8.

Run ``pytest benchmarks/`` for the smoke run (tiny sizes, once) and ``pytest benchmarks/ --benchmark``
for the full measurement; ``python -m benchmarks.report`` writes ``benchmarks/RESULTS.md``.
"""
