"""A small street scene seen by a LiDAR and two overlapping cameras, ray-cast exactly, for the tests
of ``train.image_labels`` and the measurements of decision 60 (``python tests/image_scene.py``).

Scene (metres, scan frame, z up): ground z = 0 (class 0 road), a wall x in [18, 19] (1 building),
seeded poles 0.3 m wide (2 pole) and two cars (3 car), axis-aligned boxes. The LiDAR at (0, 0, 2)
casts beams x azimuths rays (32 x 1440 by default); a point keeps the class of the surface its ray
hits first. The cameras sit apart from the LiDAR (as on a vehicle, so the LiDAR sees past objects
the cameras see in front of them): front (yaw 0) at (1, -0.6, 1.4) and front-left (yaw 50 deg) at
(1, 0.8, 1.4), 90 deg wide, overlapping over 40 deg. A camera's perfect prediction is the class of
the first surface through each pixel centre (255 where the ray meets nothing, the sky).
:class:`SceneDataset` serves scans, cameras and images from a folder as a data set that reads
cameras does (``cameras.json`` per scan).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.data.base import PointCloudDataset
from train.data.cameras.camera import Camera, checked_camera, read_camera_list, write_camera_list
from train.data.cameras.image_projection import CAMERA_RULES, DEFAULT_CAMERA_RULE, DEFAULT_DEPTH_TEST, DepthTest
from train.data.validation import make_sample

CLASSES = ("road", "building", "pole", "car")
SKY = 255
LIDAR = np.array([0.0, 0.0, 2.0])
WIDTH, HEIGHT, FOCAL = 160, 120, 80.0


@dataclass(frozen=True)
class Box:
    low: tuple[float, float, float]
    high: tuple[float, float, float]
    cls: int


def scene(seed: int = 0) -> list[Box]:
    rng = np.random.default_rng(seed)
    boxes = [Box((18, -40, 0), (19, 40, 6), 1), Box((8, 1.5, 0), (12, 3.3, 1.5), 3),
             Box((11, -4.5, 0), (15, -2.7, 1.6), 3)]
    for _ in range(8):
        x, y = rng.uniform(4, 16), rng.uniform(-6, 8)
        boxes.append(Box((x, y, 0), (x + 0.3, y + 0.3, 4), 2))
    return boxes


def cast(origin: np.ndarray, dirs: np.ndarray, boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    """(t, class) of the first hit of rays ``origin + t dirs`` (inf, SKY where none)."""
    n = len(dirs)
    best, cls = np.full(n, np.inf), np.full(n, SKY)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dirs[:, 2] < 0, -origin[2] / dirs[:, 2], np.inf)
        hit = t_ground < best
        best[hit], cls[hit] = t_ground[hit], 0
        for box in boxes:
            t1 = (np.array(box.low) - origin) / dirs
            t2 = (np.array(box.high) - origin) / dirs
            near = np.nanmax(np.minimum(t1, t2), axis=1)
            far = np.nanmin(np.maximum(t1, t2), axis=1)
            hit = (near <= far) & (near > 0) & (near < best)
            best[hit], cls[hit] = near[hit], box.cls
    return best, cls


def lidar_scan(boxes: list[Box], beams: int = 32, azimuths: int = 1440) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 3), true class (n,)) of the rays that hit something."""
    el = np.radians(np.linspace(-25, 5, beams))
    az = np.radians(np.arange(azimuths) * 360.0 / azimuths)
    e, a = np.meshgrid(el, az, indexing="ij")
    dirs = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], -1).reshape(-1, 3)
    t, cls = cast(LIDAR, dirs, boxes)
    keep = np.isfinite(t) & (t < 60)
    return LIDAR + t[keep, None] * dirs[keep], cls[keep]


def camera_pose(yaw_deg: float, position: tuple[float, float, float]) -> np.ndarray:
    """scan_to_camera (4 x 4) of a level camera looking along ``yaw`` from ``position``."""
    y = np.radians(yaw_deg)
    forward, right, down = np.array([np.cos(y), np.sin(y), 0]), np.array([np.sin(y), -np.cos(y), 0]), np.array(
        [0, 0, -1.0])
    rot = np.stack([right, down, forward])  # rows: camera axes in the scan frame
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, -rot @ np.asarray(position)
    return out


CAMERAS = {"FRONT": (0.0, (1.0, -0.6, 1.4)), "FRONT_LEFT": (50.0, (1.0, 0.8, 1.4))}


def make_camera(name: str, image: str) -> Camera:
    yaw, position = CAMERAS[name]
    k = [[FOCAL, 0, (WIDTH - 1) / 2], [0, FOCAL, (HEIGHT - 1) / 2], [0, 0, 1]]
    return checked_camera(name, image, WIDTH, HEIGHT, k, camera_pose(yaw, position), "scene")


def render(camera: Camera, boxes: list[Box]) -> tuple[np.ndarray, np.ndarray]:
    """(class image H x W uint8, depth image H x W) through each pixel centre."""
    v, u = np.meshgrid(np.arange(camera.height), np.arange(camera.width), indexing="ij")
    pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], -1)
    rays_cam = pix @ np.linalg.inv(camera.intrinsics).T  # z = 1: t is the depth
    rot, trans = camera.scan_to_camera[:3, :3], camera.scan_to_camera[:3, 3]
    centre = -rot.T @ trans
    t, cls = cast(centre, rays_cam @ rot, boxes)
    return cls.reshape(camera.height, camera.width).astype(np.uint8), t.reshape(camera.height, camera.width)


def degrade(classes: np.ndarray, factor: int) -> np.ndarray:
    """A coarser model's ids: each factor x factor block takes its centre pixel's class."""
    h, w = classes.shape
    rows = np.minimum((np.arange(h) // factor) * factor + factor // 2, h - 1)
    cols = np.minimum((np.arange(w) // factor) * factor + factor // 2, w - 1)
    return classes[np.ix_(rows, cols)]


class SceneDataset(PointCloudDataset):
    """Scans ``<root>/<split>/<name>.npy`` (x, y, z), each with ``<root>/<split>/<name>/cameras.json``
    (:func:`train.data.cameras.camera.read_camera_list`, images relative to the root): a data set that reads
    cameras as the preprocessed layout does."""

    class_names = CLASSES

    def __init__(self, root: str | Path, split: str) -> None:
        super().__init__()
        self.root, self.split = Path(root), split
        self.names = sorted(p.stem for p in (self.root / split).glob("*.npy"))

    def __len__(self) -> int:
        return len(self.names)

    def scan_name(self, index: int) -> str:
        return self.names[index]

    def load(self, index: int) -> dict:
        path = self.root / self.split / f"{self.names[index]}.npy"
        xyz = np.load(path, allow_pickle=False)
        return make_sample(xyz, np.arange(len(xyz)) % 7 / 7, np.full(len(xyz), -1), self.names[index], path)

    def cameras(self, index: int) -> list[Camera]:
        return read_camera_list(self.root / self.split / self.names[index])


def noisy_probabilities(classes: np.ndarray, seed: int) -> np.ndarray:
    """H x W x K float32: softmax of 2.5 one-hot(class) + standard normal noise (a 2D model's
    uncertain probabilities; the sky's pixels are noise alone)."""
    rng = np.random.default_rng(seed)
    logits = 2.5 * (classes[..., None] == np.arange(len(CLASSES))) + rng.normal(size=classes.shape + (len(CLASSES),))
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def write_scene(root: Path, predictions: Path, split: str = "training", scans: int = 1, beams: int = 32,
                azimuths: int = 1440, factor: int = 1, camera_names: tuple[str, ...] = tuple(CAMERAS),
                probabilities: bool = False) -> tuple[SceneDataset, dict[str, np.ndarray]]:
    """``scans`` scenes (seeds 0, 1, ...) written under ``root`` (scans, grey PNG images of the
    right size) with each camera's ids (``degrade``d by ``factor``) as ``.png`` under ``predictions``
    (``probabilities``: :func:`noisy_probabilities` of them as ``.npy``); the data set and each
    scan's true classes."""
    from PIL import Image

    truth = {}
    for seed in range(scans):
        name = f"{split}{seed:02d}"
        boxes = scene(seed)
        xyz, cls = lidar_scan(boxes, beams, azimuths)
        (root / split).mkdir(parents=True, exist_ok=True)
        np.save(root / split / f"{name}.npy", xyz.astype(np.float32))
        truth[name] = cls
        cameras = []
        for cam_name in camera_names:
            image = f"{split}/{name}/cameras/{cam_name}.png"
            camera = make_camera(cam_name, image)
            classes, _ = render(camera, boxes)
            predicted = degrade(classes, factor)
            for folder in (root, predictions):
                (folder / image).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros_like(classes)).save(root / image)
            if probabilities:
                np.save((predictions / image).with_suffix(".npy"),
                        noisy_probabilities(predicted, seed * 10 + len(cameras)))
            else:
                Image.fromarray(predicted).save(predictions / image)
            cameras.append(camera)
        write_camera_list(root / split / name, cameras)
    return SceneDataset(root, split), truth


def label_counts(dataset: SceneDataset, truth: dict[str, np.ndarray], out: Path, rule: str,
                 depth_test: DepthTest | None) -> tuple[int, int]:
    """(correct, wrong) labels of the scenes of ``dataset`` (predictions under ``out``/../pred)."""
    from train.data.cameras.image_predictions import ClassMap
    from train.prediction.image_labels import ImageLabelRun, label_split

    class_map = ClassMap(len(CLASSES), {**{i: i for i in range(len(CLASSES))}, SKY: -1})
    run = ImageLabelRun(dataset.root, out.parent / "pred", None, out, class_map, rule, 1.0, depth_test, False,
                        False, None)
    label_split(dataset, dataset.split, run, {})
    correct = wrong = 0
    for name, classes in truth.items():
        labels = np.load(out / f"{name}.npy")
        seen = labels >= 0
        correct += int((labels[seen] == classes[seen]).sum())
        wrong += int((labels[seen] != classes[seen]).sum())
    return correct, wrong


def occlusion_counts(beams: int, azimuths: int, test: DepthTest, scans: int = 3) -> tuple[int, int, int, int]:
    """(occluded, of them hidden, visible, of them hidden): the (point, camera) pairs of the scenes
    where the camera sees the point's pixel but a surface lies between them (the ray from the camera
    meets something 5 cm or more before the point), and how many of each the depth test hides."""
    from train.data.cameras.image_projection import hidden_points

    counts = np.zeros(4, np.int64)
    for seed in range(scans):
        boxes = scene(seed)
        xyz, _ = lidar_scan(boxes, beams, azimuths)
        for name in CAMERAS:
            camera = make_camera(name, "unused.png")
            rows, cols, depth = camera.pixels(xyz)
            seen = rows >= 0
            centre = -camera.scan_to_camera[:3, :3].T @ camera.scan_to_camera[:3, 3]
            ray = xyz[seen] - centre
            dist = np.linalg.norm(ray, axis=1)
            t, _ = cast(centre, ray / dist[:, None], boxes)
            occluded = t < dist - 0.05
            hidden = hidden_points(rows[seen], cols[seen], depth[seen], camera.width, test)
            counts += [occluded.sum(), (occluded & hidden).sum(), (~occluded).sum(), (~occluded & hidden).sum()]
    return tuple(int(c) for c in counts)


def measure(folder: Path) -> None:
    """Decision 60's tables: the depth test against LiDAR density, and the camera rules."""
    print("occluded (point, camera) pairs hidden / visible pairs hidden, default depth test")
    for beams, azimuths in ((64, 2880), (32, 1440), (16, 360), (8, 180)):
        occluded, caught, visible, lost = occlusion_counts(beams, azimuths, DEFAULT_DEPTH_TEST)
        print(f"{beams} x {azimuths}: {caught}/{occluded} ({100 * caught / occluded:.0f}%); "
              f"{lost}/{visible} ({100 * lost / visible:.1f}%)")
    print("depth test (the default camera rule; correct / wrong labels of 3 scenes)")
    tests = {"none": None, **{f"block {b}": DepthTest(b) for b in (1, 2, 4, 8)},
             **{f"auto {r:g} + {a:g} m": DepthTest(None, r, a) for r, a in ((0.05, 0.3), (0.1, 1.0), (0.2, 1.0))}}
    for beams, azimuths in ((64, 2880), (32, 1440), (16, 360), (8, 180)):
        root = folder / f"d{beams}"
        dataset, truth = write_scene(root / "root", root / "pred", scans=3, beams=beams, azimuths=azimuths)
        cells = [f"{k}: {c}/{w}" for k, t in tests.items() for c, w in [label_counts(dataset, truth, root / "out",
                                                                                      DEFAULT_CAMERA_RULE, t)]]
        print(f"{beams} x {azimuths}: " + "; ".join(cells))
    print("camera rules (default depth test; correct / wrong labels of 3 scenes, 32 x 1440)")
    for what, factor, probs in (("exact ids", 1, False), ("ids at 1/4 resolution", 4, False),
                                ("noisy probabilities", 1, True), ("noisy probabilities, 1/4", 4, True)):
        root = folder / f"r{factor}{probs}"
        dataset, truth = write_scene(root / "root", root / "pred", scans=3, factor=factor, probabilities=probs)
        cells = [f"{rule}: {c}/{w}" for rule in CAMERA_RULES
                 for c, w in [label_counts(dataset, truth, root / "out", rule, DEFAULT_DEPTH_TEST)]]
        print(f"{what}: " + "; ".join(cells))


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        measure(Path(tmp))
