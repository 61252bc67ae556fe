"""The batch plan's compiled kernels (decision 47): alone in this directory so that their cached
machine code (``fast.numba_cache``) is versioned by these sources only, not by every model file."""
