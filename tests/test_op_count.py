"""``train.engine.op_count.count_ops`` counts what it says: small functions whose dispatched operators and
host synchronisations are known by hand give exactly those counts (views and allocations are not
ops; value-sized ops, host reads and boolean masks are syncs; the backward pass is seen)."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from train.engine.op_count import count_ops

X = torch.arange(12.0)
I = torch.tensor([3, 1, 3])


@pytest.mark.parametrize(("fn", "ops", "syncs"), [
    pytest.param(lambda: X * 2 + 1, 2, 0, id="two elementwise ops"),
    pytest.param(lambda: X.view(3, 4).t().reshape(12)[1:], 1, 0, id="views: only the reshape's copy"),
    pytest.param(lambda: (torch.empty(5), torch.empty_like(X), X.new_empty(2)), 0, 0, id="allocations"),
    pytest.param(lambda: torch.zeros(5), 1, 0, id="zeros fills"),
    pytest.param(lambda: X.sum().item(), 2, 1, id="item"),
    pytest.param(lambda: bool(X.sum() > 0), 3, 1, id="bool of a tensor"),
    pytest.param(lambda: X[X > 5], 2, 1, id="boolean-mask index"),
    pytest.param(lambda: X[I], 1, 0, id="integer index"),
    pytest.param(lambda: X.clone().index_put_((X > 5,), torch.tensor(0.0)), 3, 1, id="boolean-mask index_put"),
    pytest.param(lambda: torch.where(X > 5, X, 0.0), 3, 0, id="masking with where (the 0.0 is a tensor)"),
    pytest.param(lambda: X.nonzero(), 1, 1, id="nonzero"),
    pytest.param(lambda: torch.unique(I), 1, 1, id="unique"),
    pytest.param(lambda: torch.masked_select(X, X > 5), 2, 1, id="masked_select"),
    pytest.param(lambda: torch.repeat_interleave(I), 1, 1, id="repeat_interleave"),
    pytest.param(lambda: torch.repeat_interleave(I, output_size=7), 1, 0, id="repeat_interleave with output_size"),
    pytest.param(lambda: (X * 1).tolist(), 1, 1, id="tolist of a tensor made inside"),
    pytest.param(lambda: (X * 1).numpy(), 1, 1, id="numpy of a tensor made inside"),
    pytest.param(lambda: X.tolist(), 0, 0, id="tolist of data already on the host"),
    pytest.param(lambda: torch.stack([X.sum(), X.max()]).tolist(), 3, 1, id="logged scalars read together"),
])
def test_known_functions_give_known_counts(fn: Callable[[], Any], ops: int, syncs: int) -> None:
    count = count_ops(fn)
    assert (count.ops, count.syncs) == (ops, syncs), (count.by_op, count.by_sync)
    assert sum(count.by_op.values()) == count.ops and sum(count.by_sync.values()) == count.syncs


def test_the_backward_pass_and_each_operator_are_counted() -> None:
    w = torch.ones(3, requires_grad=True)

    def step() -> None:
        (w * 3.0).sum().backward()

    count = count_ops(step)
    assert count.by_op["mul"] == 2  # forward w * 3 and its backward grad * 3
    assert count.by_op["sum"] == 1 and count.syncs == 0
    assert w.grad is not None  # the function really ran


def test_the_tensor_methods_are_put_back() -> None:
    tolist = torch.Tensor.tolist
    with pytest.raises(ZeroDivisionError):
        count_ops(lambda: 1 / 0)
    assert torch.Tensor.tolist is tolist and X.tolist() == list(range(12))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_reads_count_once() -> None:
    x = torch.arange(6.0, device="cuda")
    for fn in (lambda: x.sum().item(), lambda: x.tolist(), lambda: x.cpu(), lambda: x[x > 2]):
        assert count_ops(fn).syncs == 1, count_ops(fn).by_sync
