"""Unlabelled splits (``--unlabelled-split``, decision 57): each data set reads the scans of its
unlabelled split without opening a label file (the label files or folders are absent here), says
once what labels such a split holds anyway, and the mixed training list of
:class:`train.data.mixed.MixedSplit` holds the ratio in every batch, every labelled scan once an
epoch, and walks the unlabelled split through before reading any scan again."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from test_data_folder import SPEC, build_folder
from test_data_loaders import random_points, write_kitti, write_waymo
import train.data.mixed
from train.data.lidar.folder import SPEC_FILE, FolderDataset
from train.data.mixed import MixedSplit
from train.data.lidar.scan_files import write_labels, write_scan
from train.data.lidar.semantic_kitti import SemanticKITTIDataset
from train.data.synthetic import SensorConfig, synthesize_dataset
from train.data.lidar.waymo import WaymoDataset

SMALL = SensorConfig(beams=8, azimuth_steps=64)


class _Scans:
    """A stand-in split of ``n`` scans named ``<tag><i>`` that records the epoch each was read in."""

    class_names = ("a", "b")
    skip_bad_scans = False

    def __init__(self, tag: str, n: int) -> None:
        self.tag, self.n, self.epoch = tag, n, 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        return {"name": f"{self.tag}{i}", "epoch": self.epoch}

    def checkpoint_entries(self) -> dict:
        return {}


@pytest.mark.parametrize("labelled,unlabelled,ratio", [(6, 60, 1.0), (5, 7, 2.0), (4, 3, 0.5), (9, 40, 3.0)])
def test_the_mixed_list_holds_the_ratio_in_every_window_and_reads_every_unlabelled_scan_once_a_cycle(
        labelled: int, unlabelled: int, ratio: float) -> None:
    mixed = MixedSplit(_Scans("L", labelled), _Scans("U", unlabelled), "unlabelled", ratio, seed=3)
    per_epoch = max(1, round(ratio * labelled))
    assert len(mixed) == labelled + per_epoch
    draws = []
    for epoch in range(6):
        flags, index, _ = mixed.epoch_list(epoch)
        assert sorted(index[~flags].tolist()) == list(range(labelled))  # every labelled scan once
        assert flags[0] == (labelled == 0)  # a list starts with a labelled scan
        if ratio == int(ratio):  # every 1 + R consecutive entries hold one labelled scan
            window = 1 + int(ratio)
            assert {int((~flags[k:k + window]).sum()) for k in range(len(flags) - window + 1)} == {1}
        draws += index[flags].tolist()
        mixed.set_epoch(epoch)
        read = [mixed[k] for k in range(len(mixed))]
        assert [s["name"] for s in read] == [("U" if f else "L") + str(i) for f, i in zip(flags, index)]
        assert all(s.get("unlabelled", False) == f for s, f in zip(read, flags))
    for start in range(0, len(draws) - unlabelled + 1, unlabelled):  # cycles: each scan once
        assert sorted(draws[start:start + unlabelled]) == list(range(unlabelled))
    # a function of (seed, epoch) alone: a fresh copy in a fresh process lists the same
    expected = [a.copy() for a in mixed.epoch_list(4)]
    train.data.mixed._epoch_list.cache_clear()
    train.data.mixed._cycle.cache_clear()
    again = MixedSplit(_Scans("L", labelled), _Scans("U", unlabelled), "unlabelled", ratio, seed=3)
    assert all((a == b).all() for a, b in zip(again.epoch_list(4), expected))
    other = MixedSplit(_Scans("L", labelled), _Scans("U", unlabelled), "unlabelled", ratio, seed=4)
    assert not all((a == b).all() for a, b in zip(other.epoch_list(0), mixed.epoch_list(0)))


def test_an_unlabelled_scan_drawn_again_is_augmented_afresh() -> None:
    mixed = MixedSplit(_Scans("L", 4), _Scans("U", 2), "unlabelled", 1.0, seed=0)
    seen: dict[str, set[int]] = {}
    for epoch in range(3):
        mixed.set_epoch(epoch)
        for k in range(len(mixed)):
            sample = mixed[k]
            if sample.get("unlabelled"):
                seen.setdefault(sample["name"], set()).add(sample["epoch"])
    assert seen == {"U0": {0, 1, 2, 3, 4, 5}, "U1": {0, 1, 2, 3, 4, 5}}  # 12 draws of 2 scans: 6 cycles


@pytest.mark.parametrize("processes,batch,steps", [(1, 2, None), (2, 2, None), (2, 4, 2), (3, 3, None)])
def test_the_reads_a_stage_reports_are_the_unlabelled_entries_its_processes_take(
        processes: int, batch: int, steps: int | None) -> None:
    from torch.utils.data import DataLoader

    from train.runtime.distributed import ResumableDistributedSampler

    mixed = MixedSplit(_Scans("L", 5), _Scans("U", 30), "unlabelled", 2.0, seed=1)
    per_epoch_steps = steps or -(-(-(-len(mixed) // processes)) // (batch // processes))
    names = []
    for epoch in range(3):
        for rank in range(processes):
            sampler = ResumableDistributedSampler(mixed, processes, rank, shuffle=False,  # type: ignore[arg-type]
                                                  seed=1)
            sampler.set_epoch(epoch)
            mixed.set_epoch(epoch)
            loader = DataLoader(mixed, batch_size=batch // processes, sampler=sampler, collate_fn=list)
            names += [s["name"] for b, batch_ in zip(range(per_epoch_steps), loader) for s in batch_
                      if s.get("unlabelled")]
    assert mixed.reads(3, per_epoch_steps, batch, processes) == (len(names), len(set(names)))


@pytest.mark.parametrize("processes", [1, 2])
def test_epochs_cut_short_by_iters_per_epoch_still_read_every_unlabelled_scan_before_any_again(processes: int) -> None:
    """50 labelled and 100 unlabelled scans at ratio 1, epochs cut to 25 steps of 2 scans (half the
    list): 4 epochs read 100 unlabelled entries, the whole split once (decision 68). Draws that
    advanced by the epoch's 50 unlabelled entries reached 78 distinct scans."""
    mixed = MixedSplit(_Scans("L", 50), _Scans("U", 100), "unlabelled", 1.0, seed=0, read_per_epoch=25 * 2)
    assert mixed.reads(4, 25, 2, processes) == (100, 100)
    assert mixed.reads(8, 25, 2, processes) == (200, 100)
    whole = MixedSplit(_Scans("L", 50), _Scans("U", 100), "unlabelled", 1.0, seed=0)  # full epochs as they were
    assert whole.reads(2, 50, 2, processes) == (100, 100) and whole.read_per_epoch == 100


def test_the_synthetic_unlabelled_split_is_scenes_of_its_own_written_without_labels(tmp_path: Path) -> None:
    root = synthesize_dataset(tmp_path / "with", 4, seed=2, sensor=SMALL, val_fraction=0.25, test_fraction=0.25,
                              unlabelled_scenes=3)
    plain = synthesize_dataset(tmp_path / "without", 4, seed=2, sensor=SMALL, val_fraction=0.25, test_fraction=0.25)
    for split in ("training", "validation", "testing"):  # the labelled splits do not change
        a, b = WaymoDataset(root, split), WaymoDataset(plain, split)
        assert [a[i]["name"] for i in range(len(a))] == [b[i]["name"] for i in range(len(b))]
        assert all((a[i]["coord"] == b[i]["coord"]).all() for i in range(len(a)))
    assert not (plain / "unlabelled").exists()
    frames = sorted((root / "unlabelled").glob("*/*"))
    assert [f.parent.name for f in frames] == [f"segment-synth-2-{i:05d}" for i in (4, 5, 6)]  # after the others
    assert not any((f / "segment.npy").exists() for f in frames)
    unlabelled = WaymoDataset(root, "unlabelled")
    assert not unlabelled.labelled and len(unlabelled) == 3 and unlabelled.unused_labels() is None
    assert all((unlabelled[i]["segment"] == -1).all() and len(unlabelled[i]["coord"]) > 0 for i in range(3))
    from train.prediction.inputs import open_split  # train.predict labels them (pseudo-labels)

    assert (open_split("synthetic", root, "unlabelled", "v1.0-trainval", None).load(2)["segment"] == -1).all()


def test_a_waymo_unlabelled_split_opens_no_label_file_and_names_those_it_holds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frame = {"coord": rng.normal(size=(9, 3)).astype(np.float32), "strength": np.ones((9, 1), np.float32)}
    write_waymo(tmp_path, "unlabelled", {"seg-a/1": frame, "seg-a/2": {**frame, "segment": np.full(9, 3)}})
    np.save(tmp_path / "unlabelled" / "seg-a" / "2" / "segment.npy", np.zeros(3))  # would not even fit
    ds = WaymoDataset(tmp_path, "unlabelled")
    assert [(ds[i]["segment"] == -1).all() for i in range(2)] == [True, True]
    assert ds.unused_labels() == "1 of its 2 frames hold a segment.npy"


def test_semantic_kitti_test_sequences_read_without_labels_and_a_label_folder_is_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    write_kitti(tmp_path, 11, 0, random_points(rng, 16, 4), None)
    write_kitti(tmp_path, 12, 0, random_points(rng, 16, 4), None)
    ds = SemanticKITTIDataset(tmp_path, "test", labelled=False)
    assert not (tmp_path / "sequences" / "11" / "labels").exists() and ds.unused_labels() is None
    assert all((ds[i]["segment"] == -1).all() for i in range(2))
    write_kitti(tmp_path, 12, 0, random_points(rng, 16, 4), rng.integers(0, 40, 16))  # labels someone made
    ds = SemanticKITTIDataset(tmp_path, "test", labelled=False)
    assert ds.unused_labels() == "label folders 12/labels"
    assert (ds[1]["segment"] == -1).all()
    write_kitti(tmp_path, 8, 0, random_points(rng, 16, 4), None)  # labelled=False opens no label of 00-10
    assert (SemanticKITTIDataset(tmp_path, [8], labelled=False)[0]["segment"] == -1).all()
    assert [ds.scan_origin(i) for i in range(2)] == [("11", "11/000000"), ("12", "12/000000")]  # decision 68


def test_a_folder_unlabelled_split_needs_no_label_files_and_names_those_it_finds(tmp_path: Path) -> None:
    build_folder(tmp_path, {**SPEC, "splits": {**SPEC["splits"], "unlabelled": ["raw/*"]}})
    rng = np.random.default_rng(2)
    for name in ("r0.ply", "r1.bin"):
        write_scan(tmp_path / "raw" / name, np.hstack([rng.uniform(-5, 5, (50, 3)), rng.uniform(0, 255, (50, 1))]))
    ds = FolderDataset(tmp_path, "unlabelled")
    assert len(ds) == 2 and ds.unused_labels() is None
    assert all((ds[i]["segment"] == -1).all() and ds[i]["strength"].max() <= 1.0 for i in range(2))
    write_labels(tmp_path / "raw" / "r1.label", np.full(50, 9))  # an id the map does not know: never read
    assert FolderDataset(tmp_path, "unlabelled").unused_labels() == "1 of its 2 scans have a label file"
    assert (FolderDataset(tmp_path, "unlabelled")[0]["segment"] == -1).all()
    spec = yaml.safe_load((tmp_path / SPEC_FILE).read_text())
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump({**spec, "labels": {"field": "label"}}))
    fielded = FolderDataset(tmp_path, "unlabelled")  # .bin scans hold no field: refused only when labelled
    assert fielded.unused_labels() is None and (fielded[1]["segment"] == -1).all()


def test_nuscenes_sweeps_are_the_training_scenes_non_keyframes_read_without_any_label_file(tmp_path: Path) -> None:
    import json
    import shutil

    from test_data_loaders import MINI_SCENES, write_nuscenes
    from train.data.labels import NUSCENES_LEARNING_MAP
    from train.data.lidar.nuscenes import NuScenesDataset

    rng = np.random.default_rng(3)
    known = np.array(sorted(NUSCENES_LEARNING_MAP))
    train_scene, val_scene = "scene-0061", "scene-0103"  # official mini_train and mini_val scenes
    keyframes = [{"token": f"k{i}", "scene": scene, "points": random_points(rng, 20, 5), "raw": rng.choice(known, 20)}
                 for i, scene in enumerate((train_scene, val_scene))]
    write_nuscenes(tmp_path, "v1.0-mini", keyframes, more_scenes=MINI_SCENES)
    table = tmp_path / "v1.0-mini" / "sample_data.json"
    rows = json.loads(table.read_text())
    sample_of = {r["token"]: r["sample_token"] for r in rows}
    for i, (keyframe, channel) in enumerate((("k0", "LIDAR_TOP"), ("k0", "LIDAR_TOP"), ("k1", "LIDAR_TOP"),
                                             ("k0", "RADAR_FRONT"))):
        name = f"sweeps/{channel}/s{i}.pcd.bin"
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        random_points(rng, 12 + i, 5).tofile(tmp_path / name)
        rows.append({"token": f"s{i}", "sample_token": sample_of[keyframe], "filename": name, "is_key_frame": False})
    table.write_text(json.dumps(rows))
    shutil.rmtree(tmp_path / "lidarseg")  # no label file at all
    sweeps = NuScenesDataset(tmp_path, "sweeps", version="v1.0-mini")
    assert not sweeps.labelled and [k.token for k in sweeps.keyframes] == ["s0", "s1"]  # the training scene's
    assert [len(sweeps[i]["coord"]) for i in range(2)] == [12, 13]
    assert all((sweeps[i]["segment"] == -1).all() for i in range(2))
    val = NuScenesDataset(tmp_path, "val", version="v1.0-mini")
    assert [k.token for k in val.keyframes] == ["k1"]
    # the runs a training run compares (decision 68): the sweeps' scene is a training scene, not val's
    assert [sweeps.scan_origin(i) for i in range(2)] == [(train_scene, "s0"), (train_scene, "s1")]
    assert val.scan_origin(0) == (val_scene, "k1")


def test_waymo_v2_unlabelled_frames_of_the_training_segments_convert_without_reading_any_label(
        tmp_path: Path) -> None:
    import json

    import waymo_v2_scene as scene
    from train.data.lidar import waymo_convert as conv

    times = [1_000_000, 1_100_000, 1_200_000]
    src = tmp_path / "src"
    expected = scene.write_segment(src / "training", "1111_000_100", times, {times[0], times[2]})
    scene.write_segment(src / "training", "3333_000_100", times[:2], set())
    (src / "training" / "lidar_segmentation" / "3333_000_100.parquet").unlink()  # a segment nobody labelled
    scene.write_segment(src / "validation", "2222_000_100", times[:1], set(times[:1]))
    dst = tmp_path / "dst"
    summary = conv.convert_waymo(src, dst, workers=1, show_progress=False, unlabelled=True)
    assert summary["frames"] == 2 + 1 + 1 + 2  # labelled training, validation; unlabelled of each training segment
    ds = WaymoDataset(dst, "unlabelled")
    assert [ds.scan_name(i) for i in range(len(ds))] == [
        "unlabelled/1111_000_100/1100000", "unlabelled/3333_000_100/1000000", "unlabelled/3333_000_100/1100000"]
    assert not any(dst.glob("unlabelled/*/*/segment.npy")) and ds.unused_labels() is None
    first = ds[0]
    np.testing.assert_allclose(first["coord"], expected[times[1]]["coord"], atol=1e-4)
    assert (first["segment"] == -1).all()
    marker = json.loads((dst / "unlabelled" / "1111_000_100" / conv.MARKER).read_text())
    assert marker["frames"] == 1 and marker["labelled_frames_skipped"] == 2
    assert len(WaymoDataset(dst, "training")) == 2  # the labelled split as before
    assert conv.convert_waymo(src, dst, workers=1, show_progress=False, unlabelled=True)["segments_converted"] == 0
    # a run that reads the unlabelled split converts it (once) beside the labelled ones
    root = conv.prepare_waymo_root(src, tmp_path / "run", world_size=1, workers=1, unlabelled=True)
    assert len(WaymoDataset(root, "unlabelled")) == 3
