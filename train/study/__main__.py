"""``python -m train.study``: the command; the study itself is :mod:`train.study.ablation`."""
from __future__ import annotations

import os
import sys

from train.study.ablation import main
from train.study.units import pin_vector_isa

if __name__ == "__main__":
    # a study kept across sessions repeats on other x86 machines only with the pin in place before
    # numpy is imported and any kernel runs: where it was not, start again with it
    if pin_vector_isa():
        os.execv(sys.executable, sys.orig_argv)
    sys.exit(main())
