"""The batch plan (decision 40): the host-side geometry one batch's forward and backward read, shared
by the models that see the batch, and a model step without host synchronisations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train.cost import lidar_like_batch
from train.models import build_model
from train.models.plan import BatchPlan, neighbour_table, pool_table
from train.op_count import count_ops


def _batch() -> dict[str, torch.Tensor]:
    return lidar_like_batch([900, 500, 120], seed=5)


def _models() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    return [build_model(kind, 6, patch_size=64, deterministic=True).eval() for kind in ("teacher-demo", "student-demo")]


def test_one_plan_shared_by_two_models_gives_each_its_own_outputs() -> None:
    data = _batch()
    plan = BatchPlan(data["grid_coord"], data["offset"])
    device_plan = plan.on(torch.device("cpu"))
    built: list[set] = []
    with torch.no_grad():
        for model in _models():  # the teacher first, then the student
            alone, shared = model(data), model({**data, "plan": plan})
            torch.testing.assert_close(shared.logits, alone.logits, rtol=0, atol=0)
            for a, b in zip(alone.decoder_index + alone.decoder_offsets, shared.decoder_index + shared.decoder_offsets):
                assert torch.equal(a, b)
            built.append(set(device_plan._tensors))
    assert built[1] == built[0]  # the student found every table it needs already uploaded


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
    assert pool_table(cluster, 3).tolist() == [[1, 5, 6], [3, 6, 6], [0, 2, 4]]


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
