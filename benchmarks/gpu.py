"""``python -m benchmarks.gpu``: the GPU campaign (:mod:`benchmarks.gpu_campaign.campaign`, its usage)."""
import sys

from benchmarks.gpu_campaign.campaign import main

if __name__ == "__main__":
    sys.exit(main())
