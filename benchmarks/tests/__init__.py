"""The benchmark tests: ``test_bench_*.py`` measure (smoke sizes by default, ``--benchmark`` for the
paper's), the others check the rooms' code (the campaign, the report, the baselines)."""
