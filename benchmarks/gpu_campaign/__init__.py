"""The GPU campaign (``python -m benchmarks.gpu``): ``campaign`` (the plan, the time boxes, the
child process per section, the report), ``sections`` (the sections by name) made of
``cuda_tests``, ``training``, ``topo`` and ``models``, each writing through ``record``.
Imports the CPU benchmarks (``benchmarks.cpu``) and the report writers; nothing imports it but
the command ``benchmarks/gpu.py`` and its tests.
"""
