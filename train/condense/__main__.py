"""``python -m train.condense``: the command; its options and forms are :mod:`train.condense.command`
(a module of the room, so that the processes ``--procs`` starts can import its ``main``)."""
from __future__ import annotations

import sys

from train.condense.command import main

if __name__ == "__main__":
    sys.exit(main())
