"""The camera teacher (``--teacher images --image-predictions O``, decision 61): the projected rows keep
their points through grid sampling and collate; L_kld equals an independent computation on the
points a camera sees and is 0 when it sees none; a run names how many points per scan a camera
sees and its checkpoints record the folder, which a resume must not change; bad input is one line.
The files are written here in the format of ``python -m train.image_labels --probs --features``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fast.topo_loss import topo_loss
from test_train_support import TINY_MODEL, run_killed_after_checkpoint, tiny_config, tiny_data, tiny_data_folder
from train.config import RunConfig
from train.data.cameras.camera_teacher import CAMERA_KEYS
from train.data.collate import collate
from train.data.transforms import build_transforms
from train.data.validation import BadScanError
from train.data.lidar.waymo import WaymoDataset
from train.engine.loop import FINAL, LAST, ModelSpec, stage_settings
from train.engine.profiling import StepTimer
from train.engine.steps import distillation_step, to_device
from train.runner.datasets import prepare_splits
from train.runner.stages import run
from train.runtime.checkpoint import load_checkpoint
from train.runtime.checkpoint_errors import ResumeMismatchError
from train.runtime.distributed import DistInfo

CPU = DistInfo(0, 1, 0, torch.device("cpu"))
FEATURES = 5  # columns of the 2D features written here


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_data_folder(tmp_path_factory, "camera") / "data"


MIXED = dict(synthetic_unlabelled_scenes=2, unlabelled_split="unlabelled")


@pytest.fixture(scope="module")
def mixed_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic set with 2 unlabelled scenes under ``data/`` and the camera files of its
    training and unlabelled scans under ``cam/``."""
    root = tmp_path_factory.mktemp("camera-mixed")
    tiny_data(tiny_config(root, data_root=str(root / "data"), **MIXED))
    for split, labelled in (("training", True), ("unlabelled", False)):
        write_camera_files(root / "cam", root / "data", split=WaymoDataset(root / "data", split, labelled=labelled))
    return root


def write_camera_files(folder: Path, data_root: Path, manifest: str = "{}", split: Any = None) -> dict[str, float]:
    """The files of ``train.image_labels --probs --features`` for the training scans (or the scans of
    the data set ``split``) under ``folder``: a camera sees the points with x > 0; returns the points
    seen and read per scan, on average."""
    scans = tiny_data(tiny_config(data_root.parent, data_root=str(data_root))).train if split is None else split
    rng = np.random.default_rng(0)
    seen_total = points = 0
    for i in range(len(scans)):
        sample = scans.load(i)
        n, seen = len(sample["coord"]), sample["coord"][:, 0] > 0
        probs = rng.dirichlet(np.ones(scans.num_classes), n).astype(np.float16)
        features = rng.standard_normal((n, FEATURES)).astype(np.float16)
        probs[~seen] = features[~seen] = np.nan
        path = folder / scans.scan_name(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(f"{path}.probs.npy", probs)
        np.save(f"{path}.features.npy", features)
        seen_total, points = seen_total + int(seen.sum()), points + n
    (folder / "image_labels.json").write_text(manifest)
    return {"seen": seen_total / len(scans), "points": points / len(scans)}


def camera_config(tmp: Path, data_root: Path, folder: Path, **values: Any) -> RunConfig:
    """The tiny synthetic config of a kd stage taught by the camera files in ``folder``."""
    return tiny_config(tmp, **{**dict(data_root=str(data_root), stage="kd", teacher="images",
                                      image_predictions=str(folder)), **values})


def test_grid_sampling_keeps_the_camera_rows_of_the_points_it_keeps() -> None:
    """Through the training pipeline and collate, every kept row's camera rows are those of the
    point whose strength (here its index) the row holds; unseen rows stay NaN."""
    rng = np.random.default_rng(3)
    samples = []
    for b, n in enumerate((1500, 900)):
        index = np.arange(n)
        probs = np.eye(4, dtype=np.float16)[index % 4]
        features = np.stack([index, -index], axis=1).astype(np.float16)
        probs[index % 3 == 0] = features[index % 3 == 0] = np.nan
        sample = {"coord": rng.uniform(-3, 3, (n, 3)).astype(np.float32), "strength": index[:, None].astype(np.float32),
                  "segment": index % 4, "name": f"s{b}", "camera_probs": probs, "camera_features": features}
        samples.append(build_transforms("synthetic", train=True, grid_size=0.5)(sample, np.random.default_rng(b)))
    batch = collate(samples)
    kept = batch["feat"][:, 3].long()
    assert len(kept) < 2400  # grid sampling merged points
    expected = torch.where(kept % 3 == 0, -1, kept).float()
    assert torch.equal(batch["camera_features"][:, 0].float().nan_to_num(-1), expected)
    seen = kept % 3 != 0
    assert torch.isnan(batch["camera_probs"][~seen]).all()
    assert torch.equal(batch["camera_probs"][seen].float().argmax(1), kept[seen] % 4)
    assert torch.equal(batch["segment"], kept % 4)
    assert batch["camera_probs"].dtype == torch.float16 and set(CAMERA_KEYS) <= set(batch)


def _camera_step(data_root: Path, tmp: Path, edit: Any = None, device: str = "cpu", amp: bool = False,
                 folder: Path | None = None, **values: Any) -> tuple[Any, ...]:
    """One camera-teacher step (``values``: options; kd by default) of a tiny student on the first two
    training scans (with an unlabelled split: the epoch's first labelled and first unlabelled
    entries), every third point's label the ignore label, the batch changed by ``edit``, on
    ``device`` (under autocast with ``amp``); returns the student's output, the batch and the logs.
    The camera files are ``folder``'s, or written under ``tmp``. The student serializes
    deterministically: the per-forward shuffle of its curves draws from the device's generator,
    which differs between the CPU and CUDA."""
    if folder is None:
        folder = tmp / "cam"
        write_camera_files(folder, data_root)
    cfg = camera_config(tmp, data_root, folder, **values)
    data = prepare_splits(cfg, CPU)
    train = data.training_set(cfg, cfg.stage)
    if cfg.unlabelled_split is None:
        batch = collate([train[0], train[1]])
    else:
        flags = train.epoch_list(0)[0]
        batch = collate([train[int(np.flatnonzero(~flags)[0])], train[int(np.flatnonzero(flags)[0])]])
    batch["segment"][::3] = -1
    if edit is not None:
        edit(batch)
    torch.manual_seed(0)
    student = ModelSpec("student", data.num_classes, dict(TINY_MODEL, deterministic=True)).build().to(device)
    batch = to_device(batch, torch.device(device))
    seen: list[Any] = []
    student.register_forward_hook(lambda _m, _i, out: seen.append(out))
    _, logs = distillation_step(student, None, batch, stage_settings(cfg, cfg.stage, train), amp, StepTimer(),
                                term_grad_norms=True)
    return seen[0], batch, logs


def _probs(probs: torch.Tensor) -> Any:
    def edit(batch: dict[str, Any]) -> None:
        batch["camera_probs"] = probs
    return edit


def test_l_kld_equals_an_independent_computation_on_the_points_a_camera_sees(data_root: Path, tmp_path: Path) -> None:
    """T^2 KL(p^(1/T) renormalised || softmax(z_S / T)), averaged over the seen points, labelled or
    not; exact zeros in p count as 0 log 0."""
    T = 2.0
    _, batch, _ = _camera_step(data_root, tmp_path, kld_temperature=T)
    probs = batch["camera_probs"].double().numpy()
    probs[::7] = np.nan  # more unseen points than the files have
    probs[np.flatnonzero(~np.isnan(probs[:, 0]))[::5], :3] = 0.0  # exact zeros in seen rows
    batch_probs = torch.from_numpy(probs).half()
    out, batch, logs = _camera_step(data_root, tmp_path, _probs(batch_probs), kld_temperature=T)
    p = batch_probs.double().numpy()
    seen = ~np.isnan(p[:, 0])
    assert 0 < seen.sum() < len(p) and (batch["segment"][torch.from_numpy(seen)] == -1).any()
    q = p[seen] ** (1 / T)
    q /= q.sum(1, keepdims=True)
    z = out.logits.detach().double().numpy()[seen] / T
    log_s = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    terms = np.where(q > 0, q * (np.log(np.where(q > 0, q, 1)) - log_s), 0.0)
    expected = T * T * terms.sum() / seen.sum()
    assert float(logs["kld"]) == pytest.approx(expected, rel=1e-6)
    assert float(logs["camera_seen"]) == pytest.approx(seen.mean(), rel=1e-6)


def test_l_kld_is_zero_with_a_zero_gradient_when_no_camera_sees_a_point(data_root: Path, tmp_path: Path) -> None:
    _, batch, _ = _camera_step(data_root, tmp_path)
    _, _, logs = _camera_step(data_root, tmp_path, _probs(torch.full_like(batch["camera_probs"], float("nan"))))
    assert float(logs["kld"]) == 0.0 and float(logs["gradnorm_kld"]) == 0.0 and float(logs["camera_seen"]) == 0.0
    assert float(logs["loss"]) == pytest.approx(float(logs["seg"]))


@pytest.mark.parametrize("threshold", [0.0, 0.15])
def test_with_pseudo_labels_l_seg_is_the_cross_entropy_of_the_labels_and_of_the_cameras_classes_where_it_sees(
        mixed_root: Path, tmp_path: Path, threshold: float) -> None:
    """--camera-pseudo-labels, no L_kld (decision 65): L_seg (plain CE here) is the mean cross-entropy
    over the labelled scan's labelled points (its own labels, the camera filling none of its ignored
    points) and the unlabelled scan's points a camera sees whose top probability reaches the
    threshold, labelled with the camera's most likely class."""
    out, batch, logs = _camera_step(mixed_root / "data", tmp_path, folder=mixed_root / "cam", kld=False,
                                    camera_pseudo_labels=True, pseudo_label_threshold=threshold, seg_loss="ce",
                                    **MIXED)
    assert batch["unlabelled"] == [False, True] and "kld" not in logs
    end = int(batch["offset"][0])
    probs = batch["camera_probs"].double().numpy()
    seen = ~np.isnan(probs[:, 0])
    top = np.where(seen, np.nan_to_num(probs).max(1), -1.0)
    labels = batch["segment"].numpy().copy()
    assert (labels[end:] == -1).all() and (seen[:end] & (labels[:end] == -1)).any()
    kept = seen[end:] & (top[end:] >= threshold)
    labels[end:] = np.where(kept, np.nan_to_num(probs[end:]).argmax(1), -1)
    if threshold:
        assert 0 < kept.sum() < seen[end:].sum()
    else:
        assert np.array_equal(kept, seen[end:]) and 0 < kept.sum() < len(kept)
    logits = out.logits.detach().double().numpy()
    rows = labels >= 0
    z = logits[rows] - logits[rows].max(1, keepdims=True)
    log_softmax = z - np.log(np.exp(z).sum(1, keepdims=True))
    expected = -log_softmax[np.arange(rows.sum()), labels[rows]].mean()
    assert float(logs["seg"]) == pytest.approx(expected, rel=1e-5)
    assert float(logs["loss"]) == pytest.approx(float(logs["seg"]))


def test_l_topo_compares_the_2d_features_and_the_student_on_the_seen_points_of_clouds_with_two(
        data_root: Path, tmp_path: Path) -> None:
    """The step's L_topo is fast.topo_loss of the student's embedding and the 2D features at the
    seen rows of the first scan; the second, seen at one point only, is left out."""
    def one_seen_point_in_the_second_scan(batch: dict[str, Any]) -> None:
        end = int(batch["offset"][0])
        batch["camera_features"][end:] = float("nan")
        batch["camera_features"][end + 4] = 1.0

    cfg = dict(stage="distill", lambda_grad=0.0, kld=False)
    out, batch, logs = _camera_step(data_root, tmp_path, one_seen_point_in_the_second_scan, **cfg)
    end = int(batch["offset"][0])
    rows = np.flatnonzero(~np.isnan(batch["camera_features"][:end, 0].float().numpy()))
    assert 2 <= len(rows) < end
    settings = camera_config(tmp_path, data_root, tmp_path / "cam", **cfg)
    expected = topo_loss(out.embedding.detach()[rows].float(), batch["camera_features"][rows].float(), [len(rows)],
                         m=settings.topo_m, seed=0, normalize=settings.topo_normalize, dims=settings.topo_dims)
    assert float(logs["topo"]) == pytest.approx(float(expected), rel=1e-6) and float(expected) > 0
    assert float(logs["gradnorm_topo"]) > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_camera_terms_equal_the_cpu_in_float32_and_stay_close_under_amp(
        data_root: Path, tmp_path: Path) -> None:
    """The camera teacher's step (L_seg, L_kld on the seen points, L_topo on the 2D features) on a
    CUDA device: float32 gives the CPU's terms; autocast keeps them finite and near them."""
    cfg = dict(stage="distill", lambda_grad=0.0)
    _, _, cpu = _camera_step(data_root, tmp_path / "cpu", **cfg)
    _, _, gpu = _camera_step(data_root, tmp_path / "fp32", device="cuda", **cfg)
    _, _, amp = _camera_step(data_root, tmp_path / "amp", device="cuda", amp=True, **cfg)
    for term in ("loss", "seg", "kld", "topo", "camera_seen", "gradnorm_kld", "gradnorm_topo"):
        assert float(gpu[term]) == pytest.approx(float(cpu[term]), rel=1e-5), term
        assert np.isfinite(float(amp[term])) and float(amp[term]) == pytest.approx(float(cpu[term]), rel=5e-2), term
    assert float(cpu["topo"]) > 0 and float(cpu["kld"]) > 0


def test_a_run_says_how_much_a_camera_sees_and_checkpoints_record_the_folder(
        data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--stage all with --teacher images trains student, kd and distill (L_topo on the 2D features, no
    L_grad, no teacher stage); the coverage is the files' own count."""
    folder = tmp_path / "cam"
    counts = write_camera_files(folder, data_root, manifest='{"dataset": "synthetic"}')
    results = run(camera_config(tmp_path, data_root, folder, stage="all", lambda_grad=0.0, plots=False), CPU)
    assert list(results) == ["student seg", "student seg+kld", "student seg+kld+topo"]
    out = tmp_path / "out"
    assert not (out / "teacher").exists()
    camera = results["student seg+kld+topo"]["camera_teacher"]
    assert camera["seen_per_scan"] == pytest.approx(counts["seen"]) and camera["scans_counted"] == 3
    assert "camera_teacher" not in results["student seg"]
    share = 100 * counts["seen"] / counts["points"]
    line = (f"student seg+kld: camera teacher {folder}: a camera sees {counts['seen']:.0f} of {counts['points']:.0f} "
            f"points per scan on average ({share:.1f}%; 3 training scans)")
    assert line in (out / "results.md").read_text().splitlines()
    assert "--stage all trains student, kd, distill (no teacher stage" in capsys.readouterr().out
    log = (out / "distill" / "train_log.csv").read_text().splitlines()
    header, first = log[0].split(","), log[1].split(",")
    assert "grad" not in header and np.isfinite(float(first[header.index("topo")]))
    for stage in ("kd", "distill"):
        for name in (FINAL, LAST):
            entry = load_checkpoint(out / stage / name)["extra"]["camera_teacher"]
            assert entry["teacher"] == "images" and entry["predictions"] == str(folder)
            assert len(entry["image_labels_sha256"]) == 64
    assert "camera_teacher" not in load_checkpoint(out / "student" / FINAL)["extra"]


def test_a_killed_run_resumes_with_its_folder_only(data_root: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder, other = tmp_path / "cam", tmp_path / "cam2"
    write_camera_files(folder, data_root)
    write_camera_files(other, data_root)
    common = dict(epochs=2, iters_per_epoch=None, checkpoint_every=1, plots=False)
    run(camera_config(tmp_path, data_root, folder, out=str(tmp_path / "whole"), **common), CPU)
    killed = camera_config(tmp_path, data_root, folder, out=str(tmp_path / "killed"), **common)
    run_killed_after_checkpoint(monkeypatch, 2, lambda: run(killed, CPU))
    for moved in (other, None):
        if moved is None:  # the same folder, rewritten by another image_labels run
            (folder / "image_labels.json").write_text('{"rewritten": true}')
        with pytest.raises(ResumeMismatchError, match="was trained with the camera predictions in") as err:
            run(camera_config(tmp_path, data_root, moved or folder, out=str(tmp_path / "killed"), resume=True,
                              **common), CPU)
        assert "\n" not in str(err.value)
    (folder / "image_labels.json").write_text("{}")
    run(camera_config(tmp_path, data_root, folder, out=str(tmp_path / "killed"), resume=True, **common), CPU)
    whole = load_checkpoint(tmp_path / "whole" / "kd" / FINAL)["model"]
    resumed = load_checkpoint(tmp_path / "killed" / "kd" / FINAL)["model"]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_run_on_camera_pseudo_labels_trains_without_l_kld_and_its_checkpoints_record_the_threshold(
        mixed_root: Path, tmp_path: Path) -> None:
    """The pseudo-label baseline (--stage kd --no-kld --camera-pseudo-labels) trains the student on the
    mixed list; its column says so, its log has L_seg and the camera's coverage and no L_kld, and
    every checkpoint records the threshold beside the folder and the unlabelled split."""
    cfg = camera_config(tmp_path, mixed_root / "data", mixed_root / "cam", kld=False, camera_pseudo_labels=True,
                        pseudo_label_threshold=0.15, plots=False, **MIXED)
    (label, result), = run(cfg, CPU).items()
    assert label == "student seg+pseudo" and result["unlabelled_scans"]["read"] > 0
    assert result["camera_teacher"]["predictions"] == str(mixed_root / "cam")
    log = (tmp_path / "out" / "kd" / "train_log.csv").read_text().splitlines()
    header = log[0].split(",")
    assert "kld" not in header and {"seg", "camera_seen"} <= set(header) and len(log) == 3
    assert all(float(row.split(",")[header.index("seg")]) > 0 for row in log[1:])
    for name in (FINAL, LAST):
        extra = load_checkpoint(tmp_path / "out" / "kd" / name)["extra"]
        assert extra["camera_teacher"]["pseudo_label_threshold"] == 0.15
        assert extra["camera_teacher"]["predictions"] == str(mixed_root / "cam") and "unlabelled" in extra


def test_a_killed_run_on_camera_pseudo_labels_resumes_with_them_unchanged_only(
        mixed_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    common = dict(kld=False, epochs=2, iters_per_epoch=1, checkpoint_every=1, plots=False, **MIXED)

    def config(**values: Any) -> RunConfig:
        return camera_config(tmp_path, mixed_root / "data", mixed_root / "cam", **{**common, **values})

    killed = config(camera_pseudo_labels=True, pseudo_label_threshold=0.15)
    run_killed_after_checkpoint(monkeypatch, 1, lambda: run(killed, CPU))
    for changed in (dict(camera_pseudo_labels=True, pseudo_label_threshold=0.0), dict(kld=True)):
        with pytest.raises(ResumeMismatchError) as err:
            run(config(resume=True, **changed), CPU)
        assert "their pseudo-labels of the unlabelled scans at threshold 0.15) as its teacher" in str(err.value)
        assert "\n" not in str(err.value)
    run(config(resume=True, camera_pseudo_labels=True, pseudo_label_threshold=0.15), CPU)
    assert load_checkpoint(tmp_path / "out" / "kd" / FINAL)["step"] == 2


@pytest.mark.parametrize("values,message", [
    (dict(camera_pseudo_labels=True), "--camera-pseudo-labels labels the scans of the unlabelled split (the "
                                      "labelled scans keep their own labels): pass --unlabelled-split NAME"),
    (dict(teacher="ptv3", image_predictions=None, camera_pseudo_labels=True, **MIXED),
     "--camera-pseudo-labels trains L_seg on the camera teacher's classes: pass --teacher images"),
    (dict(pseudo_label_threshold=0.5), "--pseudo-label-threshold is read with --camera-pseudo-labels only"),
    (dict(camera_pseudo_labels=True, pseudo_label_threshold=1.5, **MIXED),
     "--pseudo-label-threshold must be a number in [0, 1]"),
    (dict(camera_pseudo_labels=True, stage="student", **MIXED), "--stage student with these terms reads no teacher"),
])
def test_camera_pseudo_label_options_that_cannot_apply_are_refused_in_one_line(
        tmp_path: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        camera_config(tmp_path, tmp_path / "data", tmp_path / "cam", **values)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_pseudo_label_baseline_is_a_kd_stage_without_l_kld(tmp_path: Path) -> None:
    """--stage kd --no-kld is refused as reading no teacher, and valid with --camera-pseudo-labels."""
    with pytest.raises(ValueError, match="--stage kd with these terms reads no teacher"):
        camera_config(tmp_path, tmp_path / "data", tmp_path / "cam", kld=False, **MIXED)
    cfg = camera_config(tmp_path, tmp_path / "data", tmp_path / "cam", kld=False, camera_pseudo_labels=True, **MIXED)
    assert cfg.stage_terms("kd") == {"kld": False, "topo": False, "grad": False}


@pytest.mark.parametrize("values,message", [
    (dict(stage="distill"), "--teacher images with --lambda-grad 1 (stage distill): the saliency term aligns the "
                            "student's activation gradients with the teacher network's"),
    (dict(stage="all"), "--lambda-grad 0 or --no-grad"),
    (dict(stage="teacher"), "--stage teacher trains a PTv3 teacher, which --teacher images does not use"),
    (dict(stage="student"), "--stage student with these terms reads no teacher"),
    (dict(image_predictions=None), "pass --image-predictions FOLDER"),
    (dict(teacher="ptv3", teacher_checkpoint=None), "--image-predictions is the camera teacher's folder"),
])
def test_options_the_camera_teacher_cannot_take_are_refused_in_one_line(tmp_path: Path, values: dict[str, Any],
                                                                       message: str) -> None:
    with pytest.raises(ValueError) as err:
        camera_config(tmp_path, tmp_path / "data", tmp_path / "cam", **values)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_teacher_checkpoint_with_the_camera_teacher_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--teacher-checkpoint is not read with --teacher images"):
        camera_config(tmp_path, tmp_path / "data", tmp_path / "cam", teacher_checkpoint=str(tmp_path / "t.pt"))


def test_a_missing_file_is_refused_before_training_or_skipped_and_counted(
        data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "cam"
    write_camera_files(folder, data_root)
    gone = sorted(folder.rglob("*.probs.npy"))[1]
    gone.unlink()
    with pytest.raises(FileNotFoundError) as err:
        prepare_splits(camera_config(tmp_path, data_root, folder), CPU)
    assert f"1 file(s) of the 3 training scans are missing (first: {gone})" in str(err.value)
    assert "\n" not in str(err.value)
    capsys.readouterr()
    run(camera_config(tmp_path, data_root, folder, skip_bad_scans=True, epochs=2, iters_per_epoch=None,
                      plots=False), CPU)
    err_text = capsys.readouterr().err
    assert "those scans are skipped and counted when training meets them (--skip-bad-scans)" in err_text
    log = (tmp_path / "out" / "kd" / "train_log.csv").read_text().splitlines()
    skipped = [float(row.split(",")[log[0].split(",").index("skipped_scans")]) for row in log[1:]]
    assert sum(skipped) >= 2  # the scan is met in each of the two epochs


def _nan_in_a_seen_row(probs: np.ndarray) -> np.ndarray:
    spoilt = probs.copy()
    spoilt[np.flatnonzero(~np.isnan(probs[:, 0]))[3], 2] = np.nan
    return spoilt


@pytest.mark.parametrize("spoil,message", [
    (lambda p: np.concatenate([p, p[:, :1]], axis=1), "hold 23 class columns and the data set has 22 classes"),
    (_nan_in_a_seen_row, "is NaN or infinite in some entries only"),
    (lambda p: p * 1.5, "is not a probability distribution"),
    (lambda p: p[:-1], "must be (n, C) = "),
])
def test_a_bad_probability_file_is_one_line_naming_it(data_root: Path, tmp_path: Path, spoil: Any,
                                                       message: str) -> None:
    folder = tmp_path / "cam"
    write_camera_files(folder, data_root)
    cfg = camera_config(tmp_path, data_root, folder)
    data = prepare_splits(cfg, CPU)
    path = folder / f"{data.train.scan_name(0)}.probs.npy"
    np.save(path, spoil(np.load(path).astype(np.float32)).astype(np.float16))
    with pytest.raises(BadScanError) as err:
        data.training_set(cfg, "kd")[0]
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_features_of_two_widths_are_refused_for_the_folder_or_for_the_scan(data_root: Path, tmp_path: Path) -> None:
    """Splits labelled by two 2D models (5 and 3 feature channels) give L_topo no one feature space:
    the folder is refused in one line; a scan's file of another width than its folder records is a
    bad scan naming it (before, batches of both widths stopped in the collate's concatenation)."""
    folder = tmp_path / "cam"
    splits = {"training": {"feature_channels": FEATURES}, "unlabelled": {"feature_channels": 3}}
    write_camera_files(folder, data_root, manifest=json.dumps({"splits": splits}))
    cfg = camera_config(tmp_path, data_root, folder, stage="distill", lambda_grad=0.0)
    with pytest.raises(ValueError, match=r"image_labels.json: its splits were labelled for 2D features of different "
                                         r"widths \(training: 5; unlabelled: 3\)") as err:
        prepare_splits(cfg, CPU)
    assert "\n" not in str(err.value)
    (folder / "image_labels.json").write_text(json.dumps({"splits": {"training": splits["training"]}}))
    data = prepare_splits(cfg, CPU)
    assert data.training_set(cfg, "distill")[0]["camera_features"].shape[1] == FEATURES
    path = folder / f"{data.train.scan_name(0)}.features.npy"
    np.save(path, np.load(path)[:, :3])
    with pytest.raises(BadScanError, match="hold 3 channels and image_labels.json records 5") as err:
        data.training_set(cfg, "distill")[0]
    assert str(path) in str(err.value)


def test_a_folder_labelled_for_other_classes_is_refused_in_one_line(data_root: Path, tmp_path: Path) -> None:
    """The columns of a folder labelled for a data set of as many classes in another order (a scan
    folder's dataset.yaml edited since) would teach each class another's probabilities."""
    from train.data.labels import WAYMO_CLASSES

    folder = tmp_path / "cam"
    swapped = [WAYMO_CLASSES[1], WAYMO_CLASSES[0], *WAYMO_CLASSES[2:]]
    write_camera_files(folder, data_root, manifest=json.dumps({"splits": {"training": {"classes": swapped}}}))
    with pytest.raises(ValueError, match=f"labelled for other classes than synthetic's .*\\(class 0: "
                                         f"'{WAYMO_CLASSES[1]}' there, '{WAYMO_CLASSES[0]}' here\\)") as err:
        prepare_splits(camera_config(tmp_path, data_root, folder), CPU)
    assert "\n" not in str(err.value)
    (folder / "image_labels.json").write_text(json.dumps({"splits": {"training": {"classes": list(WAYMO_CLASSES)}}}))
    assert prepare_splits(camera_config(tmp_path, data_root, folder), CPU).camera_files.classes == WAYMO_CLASSES


def test_a_folder_not_written_by_image_labels_is_refused(data_root: Path, tmp_path: Path) -> None:
    from train.runner.preflight import check_inputs

    (tmp_path / "cam").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image_labels.json"):
        check_inputs(camera_config(tmp_path, data_root, tmp_path / "cam"))


def test_the_unlabelled_split_reads_its_own_files_and_the_ce_student_reads_none(tmp_path: Path) -> None:
    """With --unlabelled-split the kd stage's unlabelled scans are taught by their own files too (a
    missing one is refused like a labelled scan's); the CE student's scans carry no camera rows."""
    folder = tmp_path / "cam"
    values = dict(synthetic_unlabelled_scenes=2, unlabelled_split="unlabelled", stage="all", lambda_grad=0.0)
    write_camera_files(folder, tmp_path / "data")
    missing = r"2 file\(s\) of the 5 training scans are missing \(first: .*unlabelled/"
    with pytest.raises(FileNotFoundError, match=missing):
        prepare_splits(camera_config(tmp_path, tmp_path / "data", folder, topo=False, **values), CPU)
    cfg = camera_config(tmp_path, tmp_path / "data", folder, topo=False, **values)
    assert cfg.stages() == ("student", "kd", "distill")
    write_camera_files(folder, tmp_path / "data", split=WaymoDataset(tmp_path / "data", "unlabelled", labelled=False))
    data = prepare_splits(cfg, CPU)
    mixed = data.training_set(cfg, "kd")
    flags, _, _ = mixed.epoch_list(0)
    unlabelled = mixed[int(flags.nonzero()[0][0])]
    assert unlabelled["unlabelled"] and unlabelled["camera_probs"].shape == (len(unlabelled["coord"]), 22)
    assert "camera_features" not in unlabelled  # no stage computes L_topo
    assert not set(CAMERA_KEYS) & set(data.training_set(cfg, "student")[0])
