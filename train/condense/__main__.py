"""``python -m train.condense``: the command; its options and forms are :mod:`train.condense.cli.command`
(a module of the room, so that the processes ``--procs`` starts can import its ``main``). The
command's process and the ranks it starts keep the memory they free (decision 95,
:func:`train.runtime.heap.hold_freed_memory`): every outer iteration of a distillation allocates
and frees the same large activations."""
from __future__ import annotations

import sys

from train.condense.cli.command import main
from train.runtime.heap import hold_freed_memory

if __name__ == "__main__":
    hold_freed_memory()
    sys.exit(main())
