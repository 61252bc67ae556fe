"""A port written from ``docs/deploy.md`` alone: the host half (the steps before the graph, the four
curves' codes, the levels, rulebooks, patches, masks and pooling tables) in NumPy inside this file,
nothing of the package's plan or prediction code, feeding an exported model whose blocks read every
curve at every level (``plan.curves_read``). Every input array equals the package's
(``train.models.graph_inputs.plan_feed``) array by array, and the labels equal ``train.predict``'s
at every point of a scan, a wide scan (decision 54's window), a scan of a few points (short
patches, depth-0 pooling) and with ``--tta``. The page's table of curve codes is the code's."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from test_onnx_export import export, surface_scan  # noqa: E402
from test_predict import run  # noqa: E402
from train.data.labels import SEMANTIC_KITTI_CLASSES  # noqa: E402
from train.data.lidar.scan_files import write_scan  # noqa: E402
from train.data.validation import make_sample  # noqa: E402
from train.engine.loop import ModelSpec  # noqa: E402
from train.models.graph_inputs import graph_input, plan_feed  # noqa: E402
from train.models.plan import BatchPlan  # noqa: E402
from train.models.serialization import encode  # noqa: E402
from train.runner.datasets import eval_pipeline  # noqa: E402
from train.runtime.checkpoint import save_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRID = 0.3
DATASET = "semantic_kitti"  # no evaluation box: a scan may be wider than the serialization holds
# Four blocks at levels 0 and 2 (encoder) and 1 (decoder): each level reads all four curves (level 3
# only z); patches of 16 points, so that clouds fill several patches and the coarse levels are short.
EVERY_CURVE = dict(enc_depths=(4, 1, 4, 1), enc_channels=(8, 8, 16, 16), enc_heads=(1, 1, 2, 2), dec_depths=(1, 4, 1),
                   dec_channels=(64, 8, 16), dec_heads=(2, 1, 2), drop_path=0.0, patch_size=16)


# ----------------------------------------------------------------- the port (docs/deploy.md, section by section)
def z_code(g: np.ndarray, depth: int) -> np.ndarray:
    """Bit i of x at code bit 3i + 2, of y at 3i + 1, of z at 3i."""
    code = np.zeros(len(g), np.int64)
    for i in range(depth):
        for axis, place in ((0, 2), (1, 1), (2, 0)):
            code |= ((g[:, axis] >> i) & 1) << (3 * i + place)
    return code


def hilbert_code(g: np.ndarray, depth: int) -> np.ndarray:
    """The page's Hilbert steps: the transform level by level, the z interleave, the prefix XOR."""
    x = [g[:, a].copy() for a in range(3)]
    for b in range(depth - 1, -1, -1):
        low = (1 << b) - 1
        for d in range(3):
            bit = (x[d] >> b) & 1
            if d == 0:
                x[0] = np.where(bit == 1, x[0] ^ low, x[0])
                continue
            t = (x[0] ^ x[d]) & low
            x[0], x[d] = np.where(bit == 1, x[0] ^ low, x[0] ^ t), np.where(bit == 1, x[d], x[d] ^ t)
    gray = z_code(np.stack(x, 1), depth)
    code, running = np.zeros_like(gray), np.zeros_like(gray)
    for i in range(3 * depth - 1, -1, -1):  # each bit the XOR of all bits above it and itself
        running ^= (gray >> i) & 1
        code |= running << i
    return code


def curve_code(g: np.ndarray, depth: int, curve: str) -> np.ndarray:
    if curve.endswith("-trans"):
        g = g[:, [1, 0, 2]]
    return z_code(g, depth) if curve.startswith("z") else hilbert_code(g, depth)


def levels(grid: np.ndarray, offset: np.ndarray, curves: list[str], count: int) -> list[dict[str, Any]]:
    """Level 0 (the voxels) and the ``count - 1`` poolings after it."""
    cloud = np.repeat(np.arange(len(offset)), np.diff(offset, prepend=0))
    depth = int(grid.max() + 1).bit_length()  # bit_length(max + 1), over every axis and cloud of the batch
    codes = np.stack([(cloud << 3 * depth) | curve_code(grid, depth, c) for c in curves])
    out = [dict(grid=grid, cloud=cloud, depth=depth, codes=codes, cluster=None)]
    while len(out) < count:
        last = out[-1]
        if last["depth"] == 0:  # one voxel per cloud: the level again, each point its own cluster
            out.append({**last, "cluster": np.arange(len(last["cloud"]))})
            continue
        _, head, cluster = np.unique(last["codes"][0] >> 3, return_index=True, return_inverse=True)
        out.append(dict(grid=last["grid"][head] >> 1, cloud=last["cloud"][head], depth=last["depth"] - 1,
                        codes=last["codes"][:, head] >> 3, cluster=cluster.reshape(-1)))
    for level in out:
        level["offset"] = np.cumsum(np.bincount(level["cloud"], minlength=len(offset)))
        level["order"] = np.argsort(level["codes"], axis=1)
    return out


def rulebook(level: dict[str, Any], m: int) -> dict[str, np.ndarray]:
    r, n, grid = m // 2, len(level["cloud"]), level["grid"] + m // 2
    side = int(grid.max()) + m

    def key(g: np.ndarray) -> np.ndarray:
        return ((level["cloud"] * side + g[:, 0]) * side + g[:, 1]) * side + g[:, 2]

    keys = key(grid)
    by_key = np.argsort(keys)
    gather, scatter, counts = [], [], []
    for o in range(m**3):
        i0, i1, i2 = o // (m * m), o // m % m, o % m
        wanted = key(grid + np.array([i0 - r, i1 - r, i2 - r]))
        at = np.minimum(np.searchsorted(keys[by_key], wanted), n - 1)
        found = np.flatnonzero(keys[by_key][at] == wanted)  # output voxels, ascending
        gather.append(by_key[at[found]])
        scatter.append(found)
        counts.append(len(found))
    return {"gather": np.concatenate(gather), "scatter": np.concatenate(scatter), "counts": np.array(counts)}


def patches(level: dict[str, Any], size: int) -> dict[str, np.ndarray]:
    counts = np.diff(level["offset"], prepend=0)
    width = size if (counts > size).any() else int(counts.max())
    positions, real = [], []
    for start, n in zip(level["offset"] - counts, counts):
        if n > width:  # ceil(n / K) rows; the last row's slots past the end step back one row
            j = np.arange(-(-n // width) * width)
            positions.append(start + np.where(j < n, j, j - width))
            real.append(np.ones(len(j), bool))
        else:  # one row of n points, padded with the cloud's first point (masked)
            j = np.arange(width)
            positions.append(start + np.where(j < n, j, 0))
            real.append(j < n)
    positions, real = np.concatenate(positions), np.concatenate(real)
    owner = np.full(len(level["cloud"]), -1)
    for slot in np.flatnonzero(real)[::-1]:  # the first real slot of each position
        owner[positions[slot]] = slot
    inverse = np.argsort(level["order"], axis=1)
    return {"gather": level["order"][:, positions].reshape(len(level["order"]), -1, width),
            "scatter": owner[inverse], "mask": np.where(real, 0, -np.inf).astype(np.float32).reshape(-1, width)}


def pooling(fine: dict[str, Any], level: dict[str, Any]) -> dict[str, np.ndarray]:
    n = len(fine["cloud"])
    members = [np.flatnonzero(level["cluster"] == c) for c in range(len(level["cloud"]))]
    table = np.full((len(members), max(map(len, members))), n)
    for c, points in enumerate(members):
        table[c, :len(points)] = points
    return {"members": table, "cluster": level["cluster"]}


def port_feed(meta: dict[str, Any], grid: np.ndarray, feat: np.ndarray) -> dict[str, np.ndarray]:
    """The graph's inputs of one scan, by the names of the metadata's ``inputs``."""
    plan = meta["plan"]
    items = [tuple(item) for item in plan["items"]]
    lv = levels(grid, np.array([len(grid)]), plan["orders"], 1 + max(item[1] for item in items))
    feed = {"feat": feat}
    for item in items:
        kind, i = item[0], item[1]
        if kind == "rulebook":
            feed.update({f"rulebook_l{i}_k{item[2]}_{f}": v for f, v in rulebook(lv[i], item[2]).items()})
        elif kind == "patches":
            layout = patches(lv[i], item[2])
            feed.update({f"patches_l{i}_gather": layout["gather"], f"patches_l{i}_scatter": layout["scatter"],
                         f"patch_mask_l{i}": layout["mask"]})
        elif kind == "pool":
            feed.update({f"pool_l{i}_{f}": v for f, v in pooling(lv[i - 1], lv[i]).items()})
    return feed


def before_graph(meta: dict[str, Any], xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 3-5 on one view's float32 coordinates: the moved coordinates, grid_coord, the kept
    points (first of each voxel) and every point's voxel row."""
    g = np.floor(xyz.astype(np.float64) / meta["grid_size"]).astype(np.int64)
    wide = g.max(0) - g.min(0) + 1 > 65_535  # step 5: the window of 65,535 voxels around the median's voxel
    if wide.any():
        low = np.where(wide, np.floor(np.median(g, axis=0)).astype(np.int64) - 32_767, g.min(0))
        high = low + 65_534
        face = np.clip(xyz.astype(np.float64), (low + 0.5) * meta["grid_size"], (high + 0.5) * meta["grid_size"])
        xyz = np.where((g < low) | (g > high), face, xyz).astype(np.float32)
        g = np.floor(xyz.astype(np.float64) / meta["grid_size"]).astype(np.int64)
    grid = g - g.min(0)
    voxels, first, inverse = np.unique(grid, axis=0, return_index=True, return_inverse=True)
    return xyz, voxels, first, inverse.reshape(-1)


def views(xyz: np.ndarray, tta: bool) -> list[np.ndarray]:
    if not tta:
        return [xyz]
    x, y = xyz[:, 0].astype(np.float64), xyz[:, 1].astype(np.float64)
    out = []
    for k in range(4):
        c, s = math.cos(2 * math.pi * k / 4), math.sin(2 * math.pi * k / 4)
        out.append(np.stack([x * c - y * s, x * s + y * c, xyz[:, 2]], 1).astype(np.float32))
    return out + [np.stack([-x, y, xyz[:, 2]], 1).astype(np.float32)]


def port_labels(model: Path, points: np.ndarray, tta: bool = False, check: dict[str, int] | None = None
                ) -> np.ndarray:
    """The label of every point of ``points`` (n, 4: x, y, z and the feature column as stored);
    ``check``: compare every view's inputs with the package's, array by array, and count them."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["topodistill"])
    xyz = points[:, :3].astype(np.float32)  # step 1
    strength = points[:, 3:4].astype(np.float32) / np.float32(meta["feature"]["scale"])
    box = meta["evaluation_box"]  # step 2
    if box is not None:
        xyz = np.clip(xyz, np.float32(box["low"]), np.float32(box["high"]))
    summed = None
    for k, seen in enumerate(views(xyz, tta)):
        moved, grid, first, inverse = before_graph(meta, seen)
        feat = np.concatenate([moved[first], strength[first]], 1)
        feed = port_feed(meta, grid, feat)
        if check is not None:
            check["arrays"] += same_as_package(meta, points, k if tta else None, grid, feat, inverse, feed)
        (logits,) = session.run(["logits"], feed)
        shifted = np.exp(logits - logits.max(1, keepdims=True))
        probs = (shifted / shifted.sum(1, keepdims=True))[inverse]
        summed = probs if summed is None else summed + probs
    return summed.argmax(1)


# ----------------------------------------------------------------- the package's arrays, for the comparison only
def same_as_package(meta: dict[str, Any], points: np.ndarray, view: int | None, grid: np.ndarray, feat: np.ndarray,
                    inverse: np.ndarray, feed: dict[str, np.ndarray]) -> int:
    """Assert the port's voxels, features, inverse and every graph input equal the package's
    (its evaluation pipeline and ``plan_feed``): same name set, dtype, shape and values."""
    from train.data.transforms import tta_views

    sample = make_sample(points[:, :3], points[:, 3:4] / np.float32(meta["feature"]["scale"]),
                         np.full(len(points), -1), "scan", Path("scan.npy"))
    out = eval_pipeline(meta["dataset"], meta["grid_size"], None if view is None else tta_views()[view])(
        sample, np.random.default_rng(0))
    for mine, theirs in ((grid, out["grid_coord"]), (feat, out["feat"]), (inverse, out["inverse"])):
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
    inputs = [graph_input(spec) for spec in meta["inputs"]]
    plan = BatchPlan(out["grid_coord"], np.array([len(grid)]), tuple(meta["plan"]["orders"]),
                     [tuple(item) for item in meta["plan"]["items"]])
    want = plan_feed(plan, out["feat"], inputs)
    assert sorted(feed) == sorted(want)
    for name, value in want.items():
        assert feed[name].dtype == value.dtype and feed[name].shape == value.shape, name
        assert np.array_equal(feed[name], value), name
    return len(want)


# ----------------------------------------------------------------- the tests
def scans() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    near = surface_scan(3_000, 21) + np.float32([0.137, -0.071, 0.0, 0.0])
    far = np.stack([rng.uniform(24_000, 26_000, 25), rng.uniform(-5, 5, 25), rng.uniform(-1, 3, 25),
                    rng.uniform(0, 1, 25)], 1).astype(np.float32)  # 8 km past the window's far face
    few = np.float32([[0.1, 0.1, 0.1, 0.5], [0.4, 0.1, 0.1, 0.2], [0.1, 0.4, 0.45, 0.9], [0.35, 0.38, 0.1, 0.1],
                      [0.12, 0.11, 0.13, 0.7]])  # 2 x 2 x 2 voxels: depth 2, level 3 pools at depth 0
    return {"near": near, "wide": np.vstack([surface_scan(1_500, 22), far]), "few": few}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("deploy_port")
    torch.manual_seed(3)
    spec = ModelSpec("student", len(SEMANTIC_KITTI_CLASSES), dict(EVERY_CURVE))
    save_checkpoint(folder / "model_final.pt", spec.build(), None, None, None, 1, 1,
                    {"dataset": DATASET, "grid_size": GRID}, {"model_spec": spec.__dict__, "stage": "teacher"})
    assert export("--checkpoint", folder / "model_final.pt", "--out", folder / "model.onnx") == 0
    return folder / "model.onnx"


@pytest.mark.parametrize("tta", [False, True], ids=["plain", "tta"])
def test_a_numpy_port_of_the_deploy_page_feeds_the_package_arrays_and_labels_every_point_as_train_predict(
        model: Path, tmp_path: Path, tta: bool) -> None:
    meta = json.loads({p.key: p.value for p in onnx.load(model).metadata_props}["topodistill"])
    assert meta["plan"]["curves_read"] == [meta["plan"]["orders"]] * 3 + [["z"]]
    for name, scan in scans().items():
        write_scan(tmp_path / "in" / f"{name}.npy", scan, ("x", "y", "z", "intensity"))
    assert run("--checkpoint", model, "--input", tmp_path / "in", "--out", tmp_path / "out",
               *(["--tta"] if tta else [])) == 0
    check = {"arrays": 0}
    for name, scan in scans().items():
        np.testing.assert_array_equal(port_labels(model, scan, tta, check), np.load(tmp_path / "out" / f"{name}.npy"),
                                      err_msg=name)
    assert check["arrays"] == 3 * (5 if tta else 1) * len(meta["inputs"])


def test_the_wide_scan_is_wider_than_the_serialization_and_the_few_points_pool_at_depth_zero() -> None:
    """The cases above are the ones the page singles out (the test would pass without them otherwise)."""
    meta = {"grid_size": GRID}
    wide, few = scans()["wide"], scans()["few"]
    moved, grid, _, _ = before_graph(meta, wide[:, :3])
    assert np.floor(wide[:, 0] / GRID).max() - np.floor(wide[:, 0] / GRID).min() > 65_535
    assert int(grid[:, 0].max()) > 32_767 and (moved[:, 0] != wide[:, 0]).sum() == 25  # moved onto the face
    _, grid, _, _ = before_graph(meta, few[:, :3])
    assert [level["depth"] for level in levels(grid, np.array([len(grid)]), ["z"], 4)] == [2, 1, 0, 0]


def curve_table() -> dict[str, list[tuple[tuple[int, int, int], int]]]:
    """The page's table of codes at depth 2: per curve, (grid, code) rows."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    table = text.split("<!-- curve codes, depth 2 -->")[1].split("\n\n")[0]
    rows = [line.strip("|").split("|") for line in table.strip().splitlines()[2:]]
    header = [h.strip(" `") for h in table.strip().splitlines()[0].strip("|").split("|")][1:]
    out: dict[str, list[tuple[tuple[int, int, int], int]]] = {curve: [] for curve in header}
    for row in rows:
        grid = tuple(int(v) for v in re.findall(r"\d+", row[0]))
        for curve, cell in zip(header, row[1:]):
            out[curve].append((grid, int(cell)))
    return out


def test_the_pages_table_of_curve_codes_is_the_codes_of_the_package_and_of_the_port() -> None:
    table = curve_table()
    assert sorted(table) == sorted(["z", "z-trans", "hilbert", "hilbert-trans"]) and len(table["z"]) >= 8
    for curve, rows in table.items():
        grid = np.array([g for g, _ in rows], np.int64)
        codes = [c for _, c in rows]
        assert encode(grid, np.zeros(len(grid), np.int64), 2, curve).tolist() == codes, curve
        assert curve_code(grid, 2, curve).tolist() == codes, curve
    every = np.stack(np.meshgrid(*(3 * [np.arange(8)]), indexing="ij"), -1).reshape(-1, 3)
    for curve in table:  # and the port's rules give the package's codes over a whole 8^3 cube
        assert np.array_equal(curve_code(every, 3, curve), encode(every, np.zeros(len(every), np.int64), 3, curve))
