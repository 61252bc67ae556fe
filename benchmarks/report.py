"""``python -m benchmarks.report``: write ``benchmarks/RESULTS.md`` from a run's JSON
(:mod:`benchmarks.report_writers.results`, its usage)."""
from benchmarks.report_writers.results import main

if __name__ == "__main__":
    main()
