"""The topological loss launches a fixed number of operators per batch, not per cloud (decision 42).

Counts of ``benchmarks.cpu.op_counts`` (exact, no timing) on the CUDA path's operators, forced on CPU
tensors: the backward of ``fast.topo_loss`` dispatches the same operators for 1 and for 6 clouds
and never synchronises; the forward's operators, synchronisations and host<->device transfers do
not grow with the clouds either (on CUDA the transfers are pinned and non-blocking, and the value
checks behind the 4 reads of this CPU run are left to the host copy).
"""
from __future__ import annotations

from benchmarks.cpu.op_counts import topo_loss_counts


def test_topo_loss_counts_do_not_grow_with_the_number_of_clouds() -> None:
    (fwd1, bwd1), (fwd6, bwd6) = (topo_loss_counts(b, 40, 16) for b in (1, 6))
    assert bwd1.by_op == bwd6.by_op and not bwd6.syncs and not bwd6.transfers
    assert abs(fwd6.ops - fwd1.ops) <= 10, (fwd1.line(), fwd6.line())
    assert fwd6.syncs == fwd1.syncs and fwd6.transfers == fwd1.transfers, (fwd1.line(), fwd6.line())
    # the device tie search reads the number of ties once; the other reads are the CPU's value checks
    assert fwd6.syncs["nonzero"] == 1 and sum(fwd6.syncs.values()) <= 5, fwd6.line()
