"""Pure-PyTorch submanifold conv (spec B, the rulebook route of decision 45) against a brute-force
dense conv3d and against the per-offset gather-matmul-scatter formula, forward and backward; the
rulebook against the neighbour table it compacts."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from train.models import sparse_conv
from plan_oracle import conv_rulebook, neighbour_table
from train.models.device_plan import DeviceRulebook, on_device
from train.models.plan import BatchPlan
from train.models.point import PointLevel
from train.models.sparse_conv import SubMConv3d, submanifold_conv


def build_table(grid: torch.Tensor, batch: torch.Tensor, kernel: int) -> torch.Tensor:
    return torch.from_numpy(neighbour_table(grid.numpy(), batch.numpy(), kernel))


def as_rulebook(table: torch.Tensor) -> DeviceRulebook:
    book = conv_rulebook(table.numpy())
    return DeviceRulebook(torch.from_numpy(book.gather), torch.from_numpy(book.scatter),
                          torch.from_numpy(book.group_offset), book.rows, table.shape[1])


def _assert_same_values_and_grads(got: torch.Tensor, expected: torch.Tensor, inputs: tuple[torch.Tensor, ...],
                                  cotangent: torch.Tensor, tol: float, grad_atol: float | None = None) -> None:
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)
    for g, e in zip(torch.autograd.grad(got, inputs, cotangent), torch.autograd.grad(expected, inputs, cotangent)):
        torch.testing.assert_close(g, e, rtol=tol, atol=grad_atol or tol)


def _per_offset_conv(feat: torch.Tensor, weight: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The oracle: ``out.index_add_(0, dst, feat[src] @ W[o])`` for each kernel offset o."""
    c_out, k = weight.shape[0], weight.shape[1]
    w = weight.reshape(c_out, k**3, -1).permute(1, 2, 0)
    out = feat.new_zeros(feat.shape[0], c_out)
    n = feat.shape[0]
    for o in range(k**3):
        src = table[:, o]
        dst = torch.nonzero(src < n).squeeze(1)
        out = out.index_add(0, dst, feat[src[dst]] @ w[o])
    return out


def _random_sites(gen: torch.Generator, num_clouds: int, side: int, n_per_cloud: int) -> tuple[torch.Tensor, torch.Tensor]:
    grids, batches = [], []
    for b in range(num_clouds):
        cells = torch.randperm(side**3, generator=gen)[:n_per_cloud]
        grids.append(torch.stack([cells // side**2, (cells // side) % side, cells % side], 1))
        batches.append(torch.full((n_per_cloud,), b, dtype=torch.long))
    return torch.cat(grids), torch.cat(batches)


def _dense_reference(feat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     grid: torch.Tensor, batch: torch.Tensor, num_clouds: int, side: int) -> torch.Tensor:
    """Scatter to a dense (B, C, X, Y, Z) grid, conv3d (cross-correlation), read the active sites."""
    c_in, k = feat.shape[1], weight.shape[1]
    dense = feat.new_zeros(num_clouds, side, side, side, c_in)
    dense = dense.index_put((batch, grid[:, 0], grid[:, 1], grid[:, 2]), feat)
    out = F.conv3d(dense.permute(0, 4, 1, 2, 3), weight.permute(0, 4, 1, 2, 3), bias, padding=k // 2)
    return out.permute(0, 2, 3, 4, 1)[batch, grid[:, 0], grid[:, 1], grid[:, 2]]


@given(seed=st.integers(0, 2**31 - 1), kernel=st.sampled_from([3, 5]), side=st.integers(2, 7),
       fill=st.floats(0.05, 1.0), num_clouds=st.integers(1, 3), bias=st.booleans())
def test_submanifold_conv_equals_dense_conv3d_forward_and_backward(
    seed: int, kernel: int, side: int, fill: float, num_clouds: int, bias: bool
) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = max(1, int(fill * side**3))
    grid, batch = _random_sites(gen, num_clouds, side, n)
    c_in, c_out = 3, 4
    feat = torch.randn(grid.shape[0], c_in, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c_out, kernel, kernel, kernel, c_in, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(c_out, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    cotangent = torch.randn(grid.shape[0], c_out, generator=gen, dtype=torch.float64)

    fast = submanifold_conv(feat, weight, as_rulebook(build_table(grid, batch, kernel)), b)
    dense = _dense_reference(feat, weight, b, grid, batch, num_clouds, side)
    inputs = (feat, weight) + ((b,) if b is not None else ())
    _assert_same_values_and_grads(fast, dense, inputs, cotangent, 1e-12)


def _random_conv(seed: int, side: int, n_per_cloud: int, c_in: int, c_out: int, kernel: int = 3) -> tuple[torch.Tensor, ...]:
    """Two clouds of random sites: their neighbour table, float64 features, weight, bias, cotangent."""
    gen = torch.Generator().manual_seed(seed)
    grid, batch = _random_sites(gen, 2, side, n_per_cloud)
    n = grid.shape[0]
    feat = torch.randn(n, c_in, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c_out, kernel, kernel, kernel, c_in, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(c_out, generator=gen, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(n, c_out, generator=gen, dtype=torch.float64)
    return build_table(grid, batch, kernel), feat, weight, bias, cotangent


def test_submanifold_conv_passes_gradcheck() -> None:
    table, feat, weight, bias, _ = _random_conv(3, 4, 20, 2, 3)
    assert torch.autograd.gradcheck(lambda f, w, b: submanifold_conv(f, w, as_rulebook(table), b), (feat, weight, bias))


@given(seed=st.integers(0, 2**31 - 1), kernel=st.sampled_from([3, 5]), fill=st.floats(0.02, 0.6))
def test_rulebook_conv_equals_the_per_offset_formula_forward_and_backward(seed: int, kernel: int, fill: float) -> None:
    table, feat, weight, _, cotangent = _random_conv(seed, 9, max(1, int(fill * 729)), 5, 6, kernel)
    fast, oracle = submanifold_conv(feat, weight, as_rulebook(table)), _per_offset_conv(feat, weight, table)
    _assert_same_values_and_grads(fast, oracle, (feat, weight), cotangent, 1e-12)


def test_float32_rulebook_conv_equals_the_per_offset_formula_on_a_lidar_like_batch() -> None:
    from train.evaluation.cost import lidar_like_batch

    data = lidar_like_batch([3000, 2000], seed=4)
    plan = BatchPlan(data["grid_coord"], data["offset"])
    table = torch.from_numpy(neighbour_table(plan.level(0).grid, plan.level(0).batch, 3))
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(5000, 32, generator=gen, requires_grad=True)
    weight = (0.1 * torch.randn(32, 3, 3, 3, 32, generator=gen)).requires_grad_(True)
    cotangent = torch.randn(5000, 32, generator=gen)
    fast = submanifold_conv(feat, weight, on_device(plan, "cpu").rulebook(0, 3))
    _assert_same_values_and_grads(fast, _per_offset_conv(feat, weight, table), (feat, weight), cotangent, 1e-5, grad_atol=1e-4)


def test_chunked_gathers_give_the_unchunked_result(monkeypatch: pytest.MonkeyPatch) -> None:
    table, feat, weight, bias, cotangent = _random_conv(8, 6, 100, 4, 5)
    book = as_rulebook(table)
    whole = submanifold_conv(feat, weight, book, bias)
    groups = book.group_offset.shape[0]
    monkeypatch.setattr(sparse_conv, "GATHER_LIMIT", book.rows * 5 * 3)  # 3 groups per chunk
    assert groups % 3 != 0  # an uneven last chunk
    chunked = submanifold_conv(feat, weight, book, bias)
    _assert_same_values_and_grads(chunked, whole, (feat, weight, bias), cotangent, 1e-12)


def test_clouds_never_see_each_other_even_on_the_same_voxels() -> None:
    grid = torch.tensor([[1, 1, 1], [1, 1, 2], [1, 1, 1], [1, 1, 2]])
    batch = torch.tensor([0, 0, 1, 1])
    table = build_table(grid, batch, 3)
    pairs = {(int(p), int(q)) for p in range(4) for q in table[p] if q < 4 and q != p}
    assert pairs == {(0, 1), (1, 0), (2, 3), (3, 2)}


def _level(grid: torch.Tensor, offset: list[int], feat: torch.Tensor) -> PointLevel:
    plan = BatchPlan(grid.cpu(), torch.tensor(offset))
    return PointLevel(feat, on_device(plan, feat.device), 0, input_coord=grid.to(feat.device).float())


def test_layer_weight_uses_spconv_krsc_layout_and_reads_the_plan_table() -> None:
    conv = SubMConv3d(4, 8, 5, bias=False)
    assert tuple(conv.weight.shape) == (8, 5, 5, 5, 4)
    gen = torch.Generator().manual_seed(0)
    grid, batch = _random_sites(gen, 1, 6, 50)
    level = _level(grid, [50], torch.randn(50, 4, generator=gen))
    out = conv(level, level.feat)
    book = level.plan.rulebook(0, 5)
    assert book.offsets == 125 and book.gather.shape == book.scatter.shape
    torch.testing.assert_close(out, _dense_reference(level.feat, conv.weight.detach(), None, grid, batch, 1, 6))


@given(seed=st.integers(0, 2**31 - 1), kernel=st.sampled_from([3, 5]), side=st.integers(1, 8),
       fill=st.floats(0.02, 1.0))
def test_rulebook_holds_each_pair_of_the_neighbour_table_once_in_its_offsets_groups(
    seed: int, kernel: int, side: int, fill: float
) -> None:
    gen = torch.Generator().manual_seed(seed)
    grid, batch = _random_sites(gen, 2, side, max(1, int(fill * side**3)))
    table = neighbour_table(grid.numpy(), batch.numpy(), kernel)
    n, k = table.shape
    book = conv_rulebook(table)
    assert book.gather.shape == book.scatter.shape == (len(book.group_offset) * book.rows,)
    offset = book.group_offset.repeat(book.rows)
    real = book.scatter < n
    assert ((book.gather < n) == real).all()  # padding pairs read the zero row, write row n
    pairs = sorted(zip(book.scatter[real].tolist(), offset[real].tolist(), book.gather[real].tolist()))
    expected = sorted((p, o, int(table[p, o])) for p in range(n) for o in range(k) if table[p, o] < n)
    assert pairs == expected
    assert (book.group_offset[1:] >= book.group_offset[:-1]).all()  # offset-major groups
    assert len(book.group_offset) * book.rows - real.sum() <= k * book.rows  # under a group per offset


def test_duplicate_voxels_are_rejected_with_a_grid_sampling_hint() -> None:
    grid = torch.tensor([[0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="grid sampling"):
        build_table(grid, torch.zeros(2, dtype=torch.long), 3)


def test_spconv_backend_refuses_cpu_tensors() -> None:
    conv = SubMConv3d(2, 2, 3, bias=True, backend="spconv")
    level = _level(torch.zeros(1, 3, dtype=torch.long), [1], torch.randn(1, 2))
    with pytest.raises(ValueError, match="CUDA tensors only"):
        conv(level, level.feat)


def test_auto_backend_runs_our_convolution_on_cpu_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` (the default) takes spconv only for CUDA tensors, even where spconv imports."""
    import train.models.sparse_conv as sparse_conv

    monkeypatch.setattr(sparse_conv, "spconv_imports", lambda: True)
    gen = torch.Generator().manual_seed(2)
    grid, batch = _random_sites(gen, 2, 6, 40)
    level = _level(grid, [40, 80], torch.randn(80, 3, generator=gen))
    auto, ours = SubMConv3d(3, 4, 3, bias=True), SubMConv3d(3, 4, 3, bias=True, backend="torch")
    ours.load_state_dict(auto.state_dict())
    assert auto.backend == "auto"
    torch.testing.assert_close(auto(level, level.feat), ours(level, level.feat), rtol=0, atol=0)


def _spconv_available() -> bool:
    try:
        import spconv.pytorch  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not _spconv_available(), reason="needs CUDA and spconv")
def test_pure_torch_conv_equals_spconv_on_cuda() -> None:
    gen = torch.Generator().manual_seed(5)
    grid, batch = _random_sites(gen, 2, 24, 3000)
    dev = torch.device("cuda")
    feat = torch.randn(grid.shape[0], 16, generator=gen).to(dev)
    level = _level(grid, [3000, 6000], feat)
    for k in (3, 5):
        torch_conv = SubMConv3d(16, 32, k, bias=True, backend="torch").to(dev)
        sp_conv = SubMConv3d(16, 32, k, bias=True, backend="spconv").to(dev)
        sp_conv.load_state_dict(torch_conv.state_dict())
        x1 = feat.clone().requires_grad_(True)
        x2 = feat.clone().requires_grad_(True)
        y1, y2 = torch_conv(level, x1), sp_conv(level, x2)
        err = (y1 - y2).abs().max().item()
        print(f"kernel {k}: max |pure torch - spconv| = {err:.3e}")
        torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-4)
        g = torch.randn_like(y1)
        torch.testing.assert_close(torch.autograd.grad(y1, x1, g)[0], torch.autograd.grad(y2, x2, g)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not _spconv_available(), reason="needs CUDA and spconv")
def test_auto_backend_takes_spconv_for_cuda_tensors() -> None:
    """On CUDA ``auto`` is spconv: bitwise the explicit spconv layer's output (ours differs in rounding)."""
    gen = torch.Generator().manual_seed(6)
    grid, _ = _random_sites(gen, 1, 10, 200)
    dev = torch.device("cuda")
    level = _level(grid, [200], torch.randn(200, 8, generator=gen).to(dev))
    auto, explicit = SubMConv3d(8, 8, 3, bias=False).to(dev), SubMConv3d(8, 8, 3, bias=False, backend="spconv").to(dev)
    explicit.load_state_dict(auto.state_dict())
    torch.testing.assert_close(auto(level, level.feat), explicit(level, level.feat), rtol=0, atol=0)
