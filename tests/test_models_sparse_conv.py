"""Pure-PyTorch submanifold conv (spec B) against a brute-force dense conv3d, forward and backward."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from train.models.point import PointLevel
from train.models.sparse_conv import SubMConv3d, build_neighbour_map, submanifold_conv


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

    nmap = build_neighbour_map(grid, batch, kernel)
    fast = submanifold_conv(feat, weight, nmap, b)
    dense = _dense_reference(feat, weight, b, grid, batch, num_clouds, side)
    torch.testing.assert_close(fast, dense, rtol=1e-12, atol=1e-12)
    inputs = [feat, weight] + ([b] if b is not None else [])
    g_fast = torch.autograd.grad(fast, inputs, cotangent)
    g_dense = torch.autograd.grad(dense, inputs, cotangent)
    for gf, gd in zip(g_fast, g_dense):
        torch.testing.assert_close(gf, gd, rtol=1e-12, atol=1e-12)


def test_submanifold_conv_passes_gradcheck() -> None:
    gen = torch.Generator().manual_seed(3)
    grid, batch = _random_sites(gen, 2, 4, 20)
    nmap = build_neighbour_map(grid, batch, 3)
    feat = torch.randn(40, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 3, 3, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w: submanifold_conv(f, w, nmap), (feat, weight))


def test_clouds_never_see_each_other_even_on_the_same_voxels() -> None:
    grid = torch.tensor([[1, 1, 1], [1, 1, 2], [1, 1, 1], [1, 1, 2]])
    batch = torch.tensor([0, 0, 1, 1])
    nmap = build_neighbour_map(grid, batch, 3)
    pairs = {(int(s), int(d)) for src, dst in zip(nmap.in_idx, nmap.out_idx) if src is not None
             for s, d in zip(src, dst)}
    assert pairs == {(0, 1), (1, 0), (2, 3), (3, 2)}


def test_layer_weight_uses_spconv_krsc_layout_and_shares_the_level_map() -> None:
    conv = SubMConv3d(4, 8, 5, bias=False)
    assert tuple(conv.weight.shape) == (8, 5, 5, 5, 4)
    gen = torch.Generator().manual_seed(0)
    grid, batch = _random_sites(gen, 1, 6, 50)
    level = PointLevel(
        feat=torch.randn(50, 4), coord=grid.float(), grid_coord=grid, batch=batch,
        offset=torch.tensor([50]), code=torch.zeros(1, 50, dtype=torch.long),
        order=torch.arange(50)[None], inverse=torch.arange(50)[None], depth=3,
    )
    out = conv(level, level.feat)
    assert ("neighbour_map", 5) in level.cache
    torch.testing.assert_close(out, _dense_reference(level.feat, conv.weight.detach(), None, grid, batch, 1, 6))


def test_duplicate_voxels_are_rejected_with_a_grid_sampling_hint() -> None:
    grid = torch.tensor([[0, 0, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="grid sampling"):
        build_neighbour_map(grid, torch.zeros(2, dtype=torch.long), 3)


def test_spconv_backend_refuses_cpu_tensors() -> None:
    conv = SubMConv3d(2, 2, 3, bias=True, backend="spconv")
    level = PointLevel(
        feat=torch.randn(1, 2), coord=torch.zeros(1, 3), grid_coord=torch.zeros(1, 3, dtype=torch.long),
        batch=torch.zeros(1, dtype=torch.long), offset=torch.tensor([1]), code=torch.zeros(1, 1, dtype=torch.long),
        order=torch.zeros(1, 1, dtype=torch.long), inverse=torch.zeros(1, 1, dtype=torch.long), depth=1,
    )
    with pytest.raises(ValueError, match="CUDA tensors only"):
        conv(level, level.feat)


def test_auto_backend_runs_our_convolution_on_cpu_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` (the default) takes spconv only for CUDA tensors, even where spconv imports."""
    import train.models.sparse_conv as sparse_conv

    monkeypatch.setattr(sparse_conv, "spconv_imports", lambda: True)
    gen = torch.Generator().manual_seed(2)
    grid, batch = _random_sites(gen, 2, 6, 40)
    level = PointLevel(
        feat=torch.randn(80, 3, generator=gen), coord=grid.float(), grid_coord=grid, batch=batch,
        offset=torch.tensor([40, 80]), code=torch.zeros(1, 80, dtype=torch.long),
        order=torch.arange(80)[None], inverse=torch.arange(80)[None], depth=3,
    )
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
    level = PointLevel(
        feat=feat, coord=grid.float().to(dev), grid_coord=grid.to(dev), batch=batch.to(dev),
        offset=torch.tensor([3000, 6000], device=dev), code=torch.zeros(1, 6000, dtype=torch.long, device=dev),
        order=torch.arange(6000, device=dev)[None], inverse=torch.arange(6000, device=dev)[None], depth=5,
    )
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
    gen = torch.Generator().manual_seed(6)
    grid, batch = _random_sites(gen, 1, 10, 200)
    dev = torch.device("cuda")
    level = PointLevel(
        feat=torch.randn(200, 8, generator=gen).to(dev), coord=grid.float().to(dev), grid_coord=grid.to(dev),
        batch=batch.to(dev), offset=torch.tensor([200], device=dev), code=torch.zeros(1, 200, dtype=torch.long, device=dev),
        order=torch.arange(200, device=dev)[None], inverse=torch.arange(200, device=dev)[None], depth=4,
    )
    SubMConv3d(8, 8, 3, bias=False).to(dev)(level, level.feat)
    assert "spconv" in level.cache and ("neighbour_map", 3) not in level.cache
