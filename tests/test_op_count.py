"""train.op_count: which dispatched ops and host synchronisations it counts."""
from __future__ import annotations

import torch

from train.op_count import count_ops


def test_views_and_allocations_are_free_and_kernels_count_once() -> None:
    x = torch.randn(4, 6)
    c = count_ops(lambda: (x.view(6, 4).t() + 1).sum(0))
    assert (c.ops, c.syncs) == (2, 0) and c.by_op == {"add": 1, "sum": 1}
    assert count_ops(lambda: torch.empty(10)).ops == 0


def test_host_synchronisations_are_counted_by_kind() -> None:
    x = torch.randn(8)
    repeats = torch.tensor([1, 2])

    def work() -> None:
        x.sum().item()
        bool((x > 0).any())
        x[x > 0]
        torch.nonzero(x)
        torch.unique(x)
        torch.repeat_interleave(torch.arange(2), repeats)
        torch.repeat_interleave(torch.arange(2), repeats, output_size=3)  # size known: no sync
        (x * 2).tolist()
        x.tolist()  # an input already on the host: no sync

    c = count_ops(work)
    assert c.by_sync == {"_local_scalar_dense": 2, "index[mask]": 1, "nonzero": 1, "_unique2": 1,
                         "repeat_interleave": 1, ".tolist()": 1}
    assert c.syncs == 7


def test_the_backward_pass_is_counted_too() -> None:
    w = torch.randn(3, 3, requires_grad=True)
    c = count_ops(lambda: (w @ w).sum().backward())
    assert c.by_op.get("mm", 0) == 3 and c.syncs == 0
