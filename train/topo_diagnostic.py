"""``python -m train.topo_diagnostic``: why L_topo is small on a trained teacher/student pair; the
diagnostic is :mod:`train.study.topo_diagnostic`."""
from __future__ import annotations

import sys

from train.study.topo_diagnostic import main

if __name__ == "__main__":
    sys.exit(main())
