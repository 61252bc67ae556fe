"""The batch plan (decisions 40 and 47): the host-side geometry one batch's forward and backward read,
shared by the models that see the batch, and a model step without host synchronisations; its
compiled rulebooks against the readable definition (``plan_oracle``); built by loader workers and
handed over as one buffer."""
from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import plan_oracle
from plan_oracle import conv_rulebook, neighbour_table
from train.evaluation.cost import lidar_like_batch
from train.engine.input_pipeline import planned_collate
from train.models import build_model
from train.models.blocks import ClusterMax
from train.models.device_plan import on_device
from train.models.packing import unpack
from train.models.plan import BatchPlan, pool_table
from train.engine.op_count import count_ops


def _batch() -> dict[str, torch.Tensor]:
    return lidar_like_batch([900, 500, 120], seed=5)


def _models() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [build_model(kind, 6, patch_size=64, deterministic=True).eval() for kind in ("teacher-demo", "student-demo")]


def test_one_plan_shared_by_two_models_gives_each_its_own_outputs() -> None:
    data = _batch()
    plan = BatchPlan(data["grid_coord"], data["offset"])
    device_plan = on_device(plan, "cpu")
    built: list[set] = []
    with torch.no_grad():
        for model in _models():  # the teacher first, then the student
            alone, shared = model(data), model({**data, "plan": plan})
            torch.testing.assert_close(shared.logits, alone.logits, rtol=0, atol=0)
            for a, b in zip(alone.decoder_index + alone.decoder_offsets, shared.decoder_index + shared.decoder_offsets):
                assert torch.equal(a, b)
            built.append(set(device_plan._tensors))
    assert built[1] == built[0]  # the student found every table it needs already uploaded


@pytest.mark.parametrize("grids", [[[[0, 0, 0]]], [[[0, 0, 0]], [[1, 0, 0], [0, 1, 1], [0, 0, 0]]]],
                         ids=["one point", "clouds within 2 voxels"])
def test_clouds_smaller_than_the_coarsest_voxel_pool_into_themselves(grids: list) -> None:
    # a 1-point scan or one under the stride-16 voxel: the levels of depth 0 pool into themselves
    grid = torch.tensor([g for cloud in grids for g in cloud])
    coord = grid.float() * 0.05
    batch = {"coord": coord, "grid_coord": grid, "feat": torch.cat([coord, torch.ones(len(grid), 1)], 1),
             "offset": torch.tensor(np.cumsum([len(c) for c in grids]))}
    for model in _models():
        with torch.no_grad():
            assert torch.isfinite(model(batch).logits).all()  # eval mode, as prediction runs it
        running = [m.running_mean.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        out = model.train()(batch)  # batch norm of one point: its running statistics (torch refused it)
        assert out.logits.shape == (len(grid), 6) and torch.isfinite(out.logits).all()
        out.logits.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        after = [m.running_mean for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        # levels of one point leave the running statistics as they are, levels of several update them
        assert any(not torch.equal(a, b) for a, b in zip(running, after)) == (len(grid) > 1)
    plan = BatchPlan(grid, batch["offset"])
    assert [plan.level(i).num_points for i in range(6)][-1] == len(grids)


def test_a_plan_of_another_batch_is_refused() -> None:
    data = _batch()
    other = lidar_like_batch([900, 500], seed=5)
    model = _models()[1]
    with pytest.raises(ValueError, match="does not describe this batch"):
        model({**data, "plan": BatchPlan(other["grid_coord"], other["offset"])})


def test_training_forward_backward_makes_no_host_synchronisation() -> None:
    data = _batch()
    torch.manual_seed(1)
    model = build_model("student-demo", 6, patch_size=64).train()  # shuffled curves, drop path on
    plan = BatchPlan(data["grid_coord"], data["offset"])

    def step() -> None:
        out = model({**data, "plan": plan})
        grads = torch.autograd.grad(out.logits.square().mean(), out.decoder_feats, retain_graph=True)
        (out.logits.square().mean() + sum(g.sum() for g in grads)).backward()

    counted = count_ops(step)
    assert counted.syncs == 0, counted.by_sync
    assert counted.ops > 0


def test_neighbour_table_lists_every_voxel_within_the_kernel_of_the_same_cloud() -> None:
    rng = np.random.default_rng(3)
    cells = rng.permutation(5**3)[:60]
    grid = np.stack(np.unravel_index(cells, (5, 5, 5)), 1)
    grid = np.concatenate([grid, grid[:20]])
    batch = np.repeat([0, 1], [60, 20])
    table = neighbour_table(grid, batch, 3)
    for p in range(80):
        for o in range(27):
            offset = np.array(np.unravel_index(o, (3, 3, 3))) - 1
            hits = np.flatnonzero((batch == batch[p]) & (grid == grid[p] + offset).all(1))
            assert table[p, o] == (hits[0] if len(hits) else 80)


def test_pool_table_lists_each_clusters_members_padded_with_the_extra_row() -> None:
    cluster = np.array([2, 0, 2, 1, 2, 0])
    table = pool_table(cluster, 3)
    assert table.members.tolist() == [[1, 5, 6], [3, 6, 6], [0, 2, 4]]
    assert table.slot.tolist() == [6, 0, 7, 3, 8, 1]  # each point's place in the flattened table


def test_levels_follow_the_pooling_of_their_parent_voxels() -> None:
    data = _batch()
    plan = BatchPlan(data["grid_coord"], data["offset"])
    grid, batch = data["grid_coord"].numpy(), np.repeat(np.arange(3), [900, 500, 120])
    for i in range(1, 4):
        level = plan.level(i)
        voxel = np.concatenate([batch[:, None], grid >> i], 1)
        same = (voxel[:, None] == voxel[None, :]).all(2)
        assert np.array_equal(same, level.index[:, None] == level.index[None, :])
        assert np.array_equal(level.grid[level.index], grid >> i)


def _degenerate_clouds() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A LiDAR-like batch and duplicate-free voxel sets where a neighbour search can go wrong: (grid, END
    offsets)."""
    rng = np.random.default_rng(11)
    line = np.stack([np.arange(40), np.zeros(40, int), np.zeros(40, int)], 1)
    plane = np.stack(np.meshgrid(np.arange(9), np.arange(7), [3], indexing="ij"), -1).reshape(-1, 3)
    cube = np.stack(np.meshgrid(*[np.arange(6)] * 3, indexing="ij"), -1).reshape(-1, 3)
    top = 2**16 - 2  # the largest coordinate the serialization allows (depth 16)
    corners = np.array([[0, 0, 0], [top, top, top], [top, top, top - 1], [top - 1, top, top], [0, top, 0], [1, top, 0]])
    sparse = np.unique(rng.integers(0, 50, (300, 3)), axis=0)
    lidar = lidar_like_batch([1500, 700], seed=8)
    return {
        "lidar-like": (lidar["grid_coord"].numpy(), lidar["offset"].numpy()),
        "one point": (np.array([[0, 0, 0]]), np.array([1])),
        "one point per cloud": (np.array([[5, 5, 5], [5, 5, 5], [0, 0, 1]]), np.array([1, 2, 3])),
        "a line along x": (line, np.array([40])),
        "a line along z, two clouds": (line[:, [1, 2, 0]], np.array([25, 40])),
        "a plane": (plane, np.array([len(plane)])),
        "a full cube, the same voxels in two clouds": (np.concatenate([cube, cube]), np.array([216, 432])),
        "coordinates at the key limits": (np.concatenate([corners, corners[:3]]), np.array([6, 9])),
        "scattered": (sparse, np.array([len(sparse) // 3, len(sparse)])),
    }


@pytest.mark.parametrize("name", list(_degenerate_clouds()))
def test_compiled_rulebooks_equal_the_readable_definition_at_every_level(name: str) -> None:
    grid, offset = _degenerate_clouds()[name]
    grid, offset = grid.astype(np.int64), offset.astype(np.int64)
    together = BatchPlan(grid, offset, items=[("rulebook", 0, 3), ("rulebook", 0, 5), ("rulebook", 0, 7)])
    alone = BatchPlan(grid, offset)
    for i in range(together.level(0).depth + 1):
        level = together.level(i)
        for kernel in (3, 5, 7):
            expected = conv_rulebook(neighbour_table(level.grid, level.batch, kernel))
            for plan in (together, alone):  # one search for three kernels, or one per kernel
                got = plan.item(("rulebook", i, kernel))
                assert got.rows == expected.rows
                for field in ("gather", "scatter", "group_offset"):
                    assert getattr(got, field).dtype == np.int64
                    assert np.array_equal(getattr(got, field), getattr(expected, field)), (i, kernel, field)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), clouds=st.integers(1, 3), side=st.integers(1, 12), fill=st.floats(0.01, 1.0))
def test_compiled_rulebooks_equal_the_readable_definition_on_random_clouds(
    seed: int, clouds: int, side: int, fill: float
) -> None:
    rng = np.random.default_rng(seed)
    grids = [np.stack(np.unravel_index(rng.permutation(side**3)[:max(1, int(fill * side**3))], (side,) * 3), 1)
             for _ in range(clouds)]
    grid = np.concatenate(grids).astype(np.int64)
    offset = np.cumsum([len(g) for g in grids]).astype(np.int64)
    plan = BatchPlan(grid, offset, items=[("rulebook", i, k) for i in range(2) for k in (3, 5)])
    for i in range(2):
        level = plan.level(i)
        for kernel in (3, 5):
            expected = conv_rulebook(neighbour_table(level.grid, level.batch, kernel))
            got = plan.item(("rulebook", i, kernel))
            assert got.rows == expected.rows and np.array_equal(got.gather, expected.gather)
            assert np.array_equal(got.scatter, expected.scatter)
            assert np.array_equal(got.group_offset, expected.group_offset)


def test_pool_table_lists_members_in_ascending_order_on_random_clusters() -> None:
    rng = np.random.default_rng(2)
    cluster = np.unique(rng.integers(0, 200, 3000), return_inverse=True)[1].astype(np.int64)
    table = pool_table(cluster, int(cluster.max()) + 1)
    assert np.array_equal(table.members, plan_oracle.pool_table(cluster, int(cluster.max()) + 1))
    assert np.array_equal(table.members.reshape(-1)[table.slot], np.arange(len(cluster)))


def test_cluster_max_gives_the_values_and_gradients_of_autograd_through_the_padded_gather() -> None:
    rng = np.random.default_rng(5)
    cluster = np.unique(rng.integers(0, 40, 300), return_inverse=True)[1].astype(np.int64)
    table = pool_table(cluster, int(cluster.max()) + 1)
    members, slot = torch.from_numpy(table.members), torch.from_numpy(table.slot)
    for dtype in (torch.float32, torch.float64):
        feat = torch.from_numpy(rng.integers(0, 3, (300, 6))).to(dtype).requires_grad_()  # ties in most clusters
        out = torch.from_numpy(rng.standard_normal((len(members), 6))).to(dtype)
        direct = F.pad(feat, (0, 0, 0, 1), value=float("-inf"))[members].amax(1)
        pooled = ClusterMax.apply(feat, members, slot)
        assert torch.equal(pooled, direct)
        assert torch.equal(*(torch.autograd.grad(y, feat, out)[0] for y in (pooled, direct)))
    smooth = torch.from_numpy(rng.standard_normal((300, 3))).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ClusterMax.apply(x, members, slot), (smooth,))


@pytest.mark.parametrize("name", list(_degenerate_clouds()))
def test_compiled_pooling_equals_the_readable_definition_at_every_level(name: str) -> None:
    grid, offset = _degenerate_clouds()[name]
    plan = BatchPlan(grid.astype(np.int64), offset.astype(np.int64))
    for i in range(1, plan.level(0).depth + 3):  # and two levels past depth 0
        expected, got = plan_oracle.pool_level(plan.level(i - 1)), plan.level(i)
        for field in ("depth", "grid", "batch", "offset", "code", "order", "inverse", "cluster", "index"):
            assert np.array_equal(getattr(got, field), getattr(expected, field)), (i, field)
        assert np.array_equal(plan.item(("pool", i)).members, plan_oracle.pool_table(got.cluster, got.num_points))


@pytest.mark.parametrize("kind", ["teacher", "student", "teacher-demo", "student-demo"])
def test_plan_items_are_every_item_a_forward_reads(kind: str) -> None:
    data = lidar_like_batch([300, 200], seed=2)
    torch.manual_seed(0)
    model = build_model(kind, 6, patch_size=64).train()
    plan = BatchPlan(data["grid_coord"], data["offset"], model.config.orders, model.plan_items(torch.device("cpu")))
    built, levels = set(plan._items), len(plan.levels)
    model({**data, "plan": plan}).logits.sum().backward()
    assert set(plan._items) == built and len(plan.levels) == levels  # nothing built during the step
    used = {key[1:] for key in on_device(plan, "cpu")._tensors}
    assert {key[1:] for key in built if key[0] != "patch_mask"} <= used | {key[1:] for key in built if key[0] == "patch_mask"}


@pytest.mark.parametrize("kind", ["student", "teacher-demo"])
def test_viewing_every_plan_item_makes_the_device_views_a_float32_forward_makes(kind: str) -> None:
    data = lidar_like_batch([300, 200], seed=2)
    torch.manual_seed(0)
    model = build_model(kind, 6, patch_size=64).train()
    items, cpu = model.plan_items(torch.device("cpu")), torch.device("cpu")
    forward = BatchPlan(data["grid_coord"], data["offset"], model.config.orders, items)
    model({**data, "plan": forward}).logits.sum().backward()
    viewed = on_device(BatchPlan(data["grid_coord"], data["offset"], model.config.orders, items), cpu)
    for key in items:
        viewed.view(key, torch.float32)
    made = {key for key in on_device(forward, cpu)._tensors if key[0] != "level"}
    assert set(viewed._tensors) == made
    with pytest.raises(ValueError, match="unknown plan item kind 'knn'"):
        viewed.view(("knn", 0), torch.float32)


def test_a_plan_handed_over_keeps_what_the_device_reads_and_builds_the_rest_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = _batch()
    model = _models()[1]
    plan = BatchPlan(data["grid_coord"], data["offset"], items=model.plan_items(torch.device("cpu")))
    moved = pickle.loads(pickle.dumps(plan))
    assert moved.buffer is not None and moved.levels[1].order is None  # one buffer, without host-only fields
    with torch.no_grad():
        torch.testing.assert_close(model({**data, "plan": moved}).logits, model(data).logits, rtol=0, atol=0)
    with caplog.at_level(logging.WARNING, logger="train.models.plan"):
        late = moved.item(("rulebook", 1, 5))
    assert "was not built where the batch was prepared" in caplog.text
    expected = plan.item(("rulebook", 1, 5))
    assert np.array_equal(late.gather, expected.gather) and np.array_equal(late.scatter, expected.scatter)


def test_a_plan_that_arrives_broken_is_refused_naming_the_level() -> None:
    data = _batch()
    plan = BatchPlan(data["grid_coord"], data["offset"], items=_models()[1].plan_items(torch.device("cpu")))
    state = plan.__getstate__()
    levels, _ = unpack(state["skeleton"], state["buffer"])
    levels[1].offset[0] = 0  # the first cloud emptied at level 1, in the packed buffer
    with pytest.raises(ValueError, match=r"broken in its hand-over: level 1 has END offsets \[0, "):
        BatchPlan.__new__(BatchPlan).__setstate__(state)


def test_a_plan_owns_its_level_0_arrays() -> None:
    data = _batch()
    plan = BatchPlan(data["grid_coord"], data["offset"])
    first = plan.levels[0]
    assert not np.shares_memory(first.grid, data["grid_coord"].numpy())
    assert not np.shares_memory(first.offset, data["offset"].numpy())


def _collate_scans(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    ends = np.cumsum([len(s["coord"]) for s in samples])
    return {**{key: torch.cat([s[key] for s in samples]) for key in ("coord", "grid_coord", "feat")},
            "offset": torch.from_numpy(ends)}


def test_loader_workers_plan_each_batch_and_the_model_reads_it_without_building_anything() -> None:
    scans = []
    for seed in range(4):
        one = lidar_like_batch([250 + 30 * seed], seed=seed)
        scans.append({key: one[key] for key in ("coord", "grid_coord", "feat")})
    model = _models()[0]
    collate = planned_collate(_collate_scans, [model], torch.device("cpu"))
    loader = torch.utils.data.DataLoader(scans, batch_size=2, collate_fn=collate, num_workers=2)
    with torch.no_grad():
        for batch in loader:
            plan = batch["plan"]
            assert isinstance(plan, BatchPlan) and plan.buffer is not None and plan.buffer.is_shared()
            # level 0 as the worker collated it (its offsets and grid once arrived as freed memory)
            assert np.array_equal(plan.levels[0].offset, batch["offset"].numpy())
            assert np.array_equal(plan.levels[0].grid, batch["grid_coord"].numpy())
            built = set(plan._items)
            got = model({**batch, "plan": plan}).logits
            assert set(plan._items) == built
            torch.testing.assert_close(got, model({k: v for k, v in batch.items() if k != "plan"}).logits, rtol=0, atol=0)
