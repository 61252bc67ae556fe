"""PTv3 model (spec A): parameter counts (A9), pooling/unpooling (A6-A7), output taps, equivariance,
batch independence, deterministic mode, input checks, paper models forward+backward, CUDA parity."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train.evaluation.cost import count_flops, count_parameters, lidar_like_batch, measure
from train.models import build_model
from train.models.blocks import Block, DropPath, SerializedPooling, SerializedUnpooling
from train.models.device_plan import on_device
from train.models.plan import BatchPlan
from train.models.point import PointLevel
from train.models.ptv3 import PTv3
from train.models.serialization import serialize, serialized_depth


def _cloud(n: int, side: int, height: int, seed: int) -> dict[str, torch.Tensor]:
    """n distinct random voxels in [0, side)^2 x [0, height) with the far corner occupied (so the
    depth is fixed by ``side``), coordinates inside the voxels (grid 0.05), features [xyz, strength]."""
    gen = torch.Generator().manual_seed(seed)
    cells = torch.randperm(side * side * height, generator=gen)[: n - 1]
    corner = torch.tensor([(side - 1) * side * height])
    cells = torch.unique(torch.cat([cells, corner]))
    while cells.numel() < n:  # the corner may have been drawn already
        cells = torch.unique(torch.cat([cells, torch.randint(0, side * side * height, (1,), generator=gen)]))
    cells = cells[torch.randperm(n, generator=gen)]
    grid = torch.stack([cells // (side * height), (cells // height) % side, cells % height], 1)
    coord = (grid.double() + torch.rand(n, 3, generator=gen, dtype=torch.float64)) * 0.05
    feat = torch.cat([coord, torch.rand(n, 1, generator=gen, dtype=torch.float64)], 1)
    return {"coord": coord, "grid_coord": grid, "feat": feat, "offset": torch.tensor([n])}


def _cat(*clouds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    sizes = torch.tensor([c["coord"].shape[0] for c in clouds])
    out = {k: torch.cat([c[k] for c in clouds]) for k in ("coord", "grid_coord", "feat")}
    out["offset"] = torch.cumsum(sizes, 0)
    return out


def _small_student(num_classes: int = 5) -> PTv3:
    """The paper student with small patches so multi-patch padding and short clouds both occur."""
    torch.manual_seed(0)
    model = build_model("student", num_classes, patch_size=48, deterministic=True).double().eval()
    # Non-trivial BatchNorm statistics so eval-mode normalisation is exercised.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


# --- parameter counts (spec A9) -------------------------------------------------------------------

@pytest.mark.parametrize("kind,num_classes,expected", [
    ("teacher", 16, 46_159_312), ("teacher", 22, 46_159_702), ("teacher", 19, 46_159_507),
    ("student", 16, 2_777_344),
])
def test_parameter_count_matches_spec_a9(kind: str, num_classes: int, expected: int) -> None:
    assert count_parameters(build_model(kind, num_classes, in_channels=4)) == expected


def test_module_parameter_counts_follow_the_spec_a9_formulas() -> None:
    c = 24
    assert count_parameters(Block(c, 2, 16, 0.0, 0)) == 40 * c * c + 17 * c
    assert count_parameters(SerializedPooling(16, 40)) == 16 * 40 + 3 * 40
    assert count_parameters(SerializedUnpooling(40, 16, 24)) == (40 + 16) * 24 + 6 * 24
    model = build_model("student", 7, in_channels=6)
    stem = sum(p.numel() for n, p in model.named_parameters() if n.startswith("stem"))
    assert stem == 125 * 6 * 16 + 2 * 16
    assert count_parameters(model.head) == 64 * 7 + 7


def test_parameter_count_counts_frozen_parameters_unless_trainable_only() -> None:
    pooling = SerializedPooling(16, 40)
    pooling.proj.weight.requires_grad_(False)
    total = count_parameters(pooling)
    assert total == 16 * 40 + 3 * 40
    assert count_parameters(pooling, trainable_only=True) == total - 16 * 40
    for p in pooling.parameters():
        p.requires_grad_(False)  # a frozen teacher
    assert count_parameters(pooling) == total and count_parameters(pooling, trainable_only=True) == 0


def test_demo_presets_keep_64_channel_embedding_and_teacher_about_ten_times_student() -> None:
    teacher, student = build_model("teacher-demo", 16), build_model("student-demo", 16)
    assert teacher.head.in_features == student.head.in_features == 64
    assert 6 <= count_parameters(teacher) / count_parameters(student) <= 14


# --- pooling and unpooling (spec A6-A7) -------------------------------------------------------------

def _level_from(data: dict[str, torch.Tensor], channels: int) -> PointLevel:
    plan = BatchPlan(data["grid_coord"], data["offset"])
    gen = torch.Generator().manual_seed(0)
    feat = torch.randn(data["coord"].shape[0], channels, generator=gen, dtype=torch.float64)
    return PointLevel(feat, on_device(plan, "cpu"), 0, input_coord=data["coord"])


def test_pooling_merges_the_points_of_each_parent_voxel_per_cloud() -> None:
    data = _cat(_cloud(300, 16, 6, seed=1), _cloud(200, 16, 6, seed=2))
    level = _level_from(data, 8)
    pool = SerializedPooling(8, 12).double().eval()
    coarse = pool(level, shuffle=False)
    fine, host = level.plan.host.level(0), level.plan.host.level(1)
    parent_voxel = torch.from_numpy(np.concatenate([fine.batch[:, None], fine.grid >> 1], 1))
    expected = torch.unique(parent_voxel, dim=0)
    assert coarse.feat.shape[0] == expected.shape[0]
    # Same cluster <=> same cloud and same parent voxel.
    coarse_voxel = torch.from_numpy(np.concatenate([host.batch[:, None], host.grid], 1))
    assert torch.equal(coarse_voxel[coarse.cluster], parent_voxel)
    # Linear before the max, then BN + GELU; coord is the cluster mean.
    proj = pool.proj(level.feat)
    for j in (0, 7, coarse.feat.shape[0] - 1):
        members = coarse.cluster == j
        torch.testing.assert_close(coarse.feat[j], pool.act(pool.norm(proj[members].max(0).values[None]))[0])
        torch.testing.assert_close(coarse.coord[j], level.coord[members].mean(0))
    # Codes are the shifted codes and equal re-encoding at depth - 1 (prefix property).
    recoded, order, _ = serialize(host.grid, host.batch, fine.depth - 1)
    assert np.array_equal(host.code, recoded) and np.array_equal(host.order, order)
    assert torch.equal(coarse.offset, torch.cumsum(torch.bincount(torch.from_numpy(host.batch)), 0))
    # Clusters are numbered in the first curve's order: the pooled level's first curve is sorted.
    assert np.array_equal(host.order[0], np.arange(len(host.batch)))


def test_pooling_gradient_reaches_each_cluster_maximum_whatever_memory_is_reused() -> None:
    # scatter_reduce's amax backward counts the output's initial value as a tied maximum even with
    # include_self=False; an uninitialised output in a freed buffer that held the same maxima (as an
    # identical earlier step leaves it) halved those gradients, so runs were not reproducible.
    data = _cat(_cloud(300, 16, 6, seed=1), _cloud(200, 16, 6, seed=2))
    level = _level_from(data, 8)
    feat = level.feat.clone().requires_grad_(True)
    pool = SerializedPooling(8, 12).double().eval()
    cluster = pool(level, shuffle=False).cluster
    proj = pool.proj(feat)
    maxima = torch.stack([proj[cluster == j].max(0).values for j in range(int(cluster.max()) + 1)])
    weights = torch.randn(maxima.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected, = torch.autograd.grad((pool.act(pool.norm(maxima)) * weights).sum(), feat)
    for _ in range(5):
        leftovers = [maxima.detach().clone() for _ in range(8)]  # freed buffers holding the exact maxima
        del leftovers
        got, = torch.autograd.grad((pool(level.with_feat(feat), shuffle=False).feat * weights).sum(), feat)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_unpooling_adds_the_two_projected_branches() -> None:
    data = _cloud(300, 16, 6, seed=3)
    level = _level_from(data, 8)
    coarse = SerializedPooling(8, 12).double().eval()(level, shuffle=False)
    unpool = SerializedUnpooling(12, 8, 10).double().eval()
    fine = unpool(coarse)
    torch.testing.assert_close(fine.feat, unpool.proj_skip(level.feat) + unpool.proj(coarse.feat)[coarse.cluster])
    assert fine.cache is level.cache and fine.index == 0  # the decoder reuses the finer level's state


def test_drop_path_drops_whole_points_and_rescales_the_rest() -> None:
    torch.manual_seed(0)
    drop = DropPath(0.25).train()
    x = torch.ones(4000, 3)
    y = drop(x)
    kept = (y != 0).all(1)
    assert torch.equal((y == 0).all(1), ~kept)
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.75))
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert torch.equal(drop.eval()(x), x)


def test_drop_path_rates_follow_encoder_linspace_and_reversed_decoder_stages() -> None:
    model = build_model("teacher", 4)
    enc = [b.drop_path.p for stage in model.enc_blocks for b in stage]
    torch.testing.assert_close(torch.tensor(enc), torch.linspace(0, 0.3, 14))
    dec = torch.linspace(0, 0.3, 8).tolist()
    # dec_blocks[0] is stage 3 (coarsest): its rates are dec[6:8] reversed.
    assert [b.drop_path.p for b in model.dec_blocks[0]] == pytest.approx(dec[6:8][::-1])
    assert [b.drop_path.p for b in model.dec_blocks[3]] == pytest.approx(dec[0:2][::-1])
    assert [b.attn.num_heads for b in model.dec_blocks[0]] == [16, 16]
    assert [b.order_row for b in model.enc_blocks[3]] == [0, 1, 2, 3, 0, 1]


# --- forward contract and invariances ---------------------------------------------------------------

def test_output_taps_shapes_index_maps_and_graph_nodes() -> None:
    model = _small_student()
    data = _cat(_cloud(500, 20, 6, seed=4), _cloud(350, 20, 6, seed=5))
    out = model(data)
    n = 850
    assert out.logits.shape == (n, 5) and out.embedding.shape == (n, 64)
    assert [f.shape[1] for f in out.decoder_feats] == [128, 128, 64, 64]
    sizes = [f.shape[0] for f in out.decoder_feats]
    assert sizes == sorted(sizes) and sizes[-1] == n
    assert out.decoder_feats[-1] is out.embedding
    torch.testing.assert_close(out.logits, model.head(out.embedding))
    batch_in = torch.repeat_interleave(torch.arange(2), torch.tensor([500, 350]))
    for feat, index, offset in zip(out.decoder_feats, out.decoder_index, out.decoder_offsets):
        assert index.dtype == torch.int64 and index.shape == (n,)
        assert int(index.max()) < feat.shape[0] and int(offset[-1]) == feat.shape[0]
        stage_batch = torch.repeat_interleave(torch.arange(2), torch.diff(offset, prepend=torch.zeros(1, dtype=torch.long)))
        assert torch.equal(stage_batch[index], batch_in)  # every point maps into its own cloud
        assert torch.equal(torch.unique(index), torch.arange(feat.shape[0]))  # every stage point is hit
    assert torch.equal(out.decoder_index[-1], torch.arange(n))
    # The taps are the live graph nodes: gradients of the loss w.r.t. them exist and are non-zero.
    loss = torch.nn.functional.cross_entropy(out.logits, torch.arange(n) % 5)
    grads = torch.autograd.grad(loss, out.decoder_feats, retain_graph=True)
    assert all(g.shape == f.shape and g.abs().sum() > 0 for g, f in zip(grads, out.decoder_feats))
    loss.backward()  # the saliency step's pattern: grads of the taps first, then the full backward
    assert model.stem_conv.weight.grad is not None and model.stem_conv.weight.grad.abs().sum() > 0


def test_frozen_eval_teacher_taps_take_gradients_when_the_input_requires_grad() -> None:
    # decisions 15: the teacher is frozen, yet dL_seg/dF of its decoder stages is needed.
    model = _small_student()
    model.requires_grad_(False)
    data = _cloud(400, 20, 6, seed=15)
    data["feat"].requires_grad_(True)
    out = model(data)
    loss = torch.nn.functional.cross_entropy(out.logits, torch.arange(400) % 5)
    grads = torch.autograd.grad(loss, out.decoder_feats)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_first_decoder_block_convolves_the_refreshed_unpooled_features() -> None:
    model = _small_student()
    seen: dict[str, torch.Tensor] = {}
    model.dec_unpool[3].register_forward_hook(lambda m, i, o: seen.__setitem__("unpooled", o.feat))
    model.dec_blocks[3][0].cpe_conv.register_forward_hook(lambda m, i, o: seen.__setitem__("conv_in", i[1]))
    model(_cloud(400, 20, 6, seed=16))
    assert seen["conv_in"] is seen["unpooled"]


def test_decoder_index_composes_the_pooling_clusters_to_parent_voxels() -> None:
    model = _small_student()
    data = _cloud(500, 20, 6, seed=6)
    out = model(data)
    # Stage l points are the voxels of grid >> l: two input points share a stage-l point iff their
    # grid >> l coincide.
    for level, index in zip((3, 2, 1, 0), out.decoder_index):
        _, expected = torch.unique(data["grid_coord"] >> level, dim=0, return_inverse=True)
        same = index[:, None] == index[None, :]
        assert torch.equal(same, expected[:, None] == expected[None, :])


def test_permuting_input_points_permutes_logits_in_deterministic_mode() -> None:
    model = _small_student()
    data = _cat(_cloud(500, 20, 6, seed=7), _cloud(400, 20, 6, seed=8))
    gen = torch.Generator().manual_seed(9)
    perm = torch.cat([torch.randperm(500, generator=gen), 500 + torch.randperm(400, generator=gen)])
    permuted = {k: (v[perm] if k != "offset" else v) for k, v in data.items()}
    with torch.no_grad():
        a, b = model(data), model(permuted)
    torch.testing.assert_close(b.logits, a.logits[perm], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(b.embedding, a.embedding[perm], rtol=1e-9, atol=1e-9)


def test_each_cloud_of_a_batch_gets_the_logits_it_gets_alone() -> None:
    model = _small_student()
    first, second = _cloud(600, 20, 6, seed=10), _cloud(130, 20, 4, seed=11)
    # Same grid extent -> same serialization depth alone and batched (the depth is a batch
    # property of PTv3, spec A1, and the Hilbert curve depends on it).
    assert serialized_depth(first["grid_coord"], 1) == serialized_depth(second["grid_coord"], 1)
    with torch.no_grad():
        both = model(_cat(first, second)).logits
        alone = torch.cat([model(first).logits, model(second).logits])
    torch.testing.assert_close(both, alone, rtol=1e-9, atol=1e-9)


def test_deterministic_mode_repeats_and_shuffled_orders_change_the_output() -> None:
    model = _small_student()
    data = _cloud(600, 20, 6, seed=12)
    with torch.no_grad():
        ref = model(data).logits
        torch.testing.assert_close(model(data).logits, ref, rtol=0, atol=0)
        model.deterministic = False
        torch.manual_seed(1)
        shuffled = [model(data).logits for _ in range(3)]
    assert any(not torch.allclose(s, ref) for s in shuffled)


def test_bf16_autocast_forward_backward_tracks_float32() -> None:
    torch.manual_seed(0)
    model = build_model("student", 5, patch_size=48, deterministic=True).eval()
    data = {k: (v.float() if v.is_floating_point() else v) for k, v in _cloud(600, 20, 6, seed=17).items()}
    ref = model(data).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(data)
    assert out.logits.dtype == torch.bfloat16
    err = (out.logits.float() - ref).abs().max() / ref.abs().max()
    assert err < 0.05, f"bf16 logits deviate by {err:.3f} of their range"
    out.logits.float().square().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


# --- input checks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.pop("offset"), "lacks 'offset'"),
    (lambda d: d.__setitem__("grid_coord", d["grid_coord"].int()), "int64"),
    (lambda d: d.__setitem__("feat", d["feat"][:, :3]), "in_channels"),
    (lambda d: d.__setitem__("offset", torch.tensor([100])), "offset"),
    (lambda d: d.__setitem__("offset", torch.tensor([0, 300])), "strictly increasing"),
])
def test_bad_inputs_raise_value_errors_naming_the_tensor(mutate, match: str) -> None:
    model = _small_student()
    data = _cloud(300, 16, 6, seed=13)
    mutate(data)
    with pytest.raises(ValueError, match=match):
        model(data)


def test_unknown_kind_and_override_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("giant", 3)
    with pytest.raises(ValueError, match="unknown override"):
        build_model("student", 3, patch=12)


# --- cost helpers --------------------------------------------------------------------------------------

def test_flop_count_of_a_sparse_conv_is_its_gemms_over_the_rulebook_pairs() -> None:
    from train.models.sparse_conv import SubMConv3d

    data = _cloud(300, 16, 6, seed=14)
    level = _level_from(data, 4)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = SubMConv3d(4, 8, 3, bias=False).double()

        def forward(self, _: dict) -> torch.Tensor:
            return self.conv(level, level.feat)

    # one (C_in, C_out) product per rulebook pair, padding pairs included (decision 45)
    pairs = level.plan.rulebook(0, 3).gather.shape[0]
    assert 300 <= pairs < 300 * 27
    assert count_flops(Wrap(), {})["total"] == 2 * pairs * 4 * 8


def test_measure_reports_times_and_peak_memory_of_a_forward_backward() -> None:
    model = build_model("student-demo", 4, deterministic=True)
    batch = lidar_like_batch([800, 600], seed=0)
    report = measure(model, batch, repeats=1)
    assert report.parameters == count_parameters(model)
    assert report.forward_s > 0 and report.forward_backward_s > 0
    assert report.forward_cpu_s > 0 and report.forward_backward_cpu_s > 0
    assert report.peak_memory_bytes > 1400 * 64 * 4  # at least the embedding is alive at the peak
    flops = count_flops(model, batch)
    assert flops["total"] >= flops["enc_blocks"] + flops["dec_blocks"] > 0


def test_cost_command_line_prints_parameters_flops_time_and_memory(capsys: pytest.CaptureFixture[str]) -> None:
    from train.evaluation.cost import main

    main(["student-demo", "--points", "500", "400", "--repeats", "1"])
    line = capsys.readouterr().out
    assert f"params={count_parameters(build_model('student-demo', 16)):,}" in line
    assert "GFLOP=" in line and "fwd+bwd=" in line and "MiB" in line


# --- the paper models ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_paper_model_forward_backward_on_a_20k_point_two_cloud_batch(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(kind, 16)
    batch = lidar_like_batch([11_000, 9_000], seed=1)
    out = model(batch)
    assert out.logits.shape == (20_000, 16) and torch.isfinite(out.logits).all()
    loss = torch.nn.functional.cross_entropy(out.logits, torch.randint(0, 16, (20_000,)))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"


# --- CUDA -----------------------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_cuda_outputs_equal_cpu_outputs_in_float32(kind: str) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    model = build_model(kind, 16, deterministic=True, attn_backend="sdpa").eval()
    batch = lidar_like_batch([9_000, 6_000], seed=2)
    with torch.no_grad():
        cpu = model(batch)
        gpu = model.cuda()({k: v.cuda() for k, v in batch.items()})
    err = (gpu.logits.cpu() - cpu.logits).abs().max().item()
    print(f"{kind}: max |cuda - cpu| logits = {err:.3e}")
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, rtol=1e-3, atol=1e-3)
    for a, b in zip(gpu.decoder_index, cpu.decoder_index):
        assert torch.equal(a.cpu(), b)
