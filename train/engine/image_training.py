"""Training the 2D camera teacher (:mod:`train.models.image_segmenter`) on rendered images, and its
checkpoint (decision 62).

:func:`fit`: pixel-wise cross-entropy over the class images (:data:`~train.data.cameras.camera_images.NO_CLASS`
ignored, a batch's loss the mean over its labelled pixels), Adam at a constant learning rate, whole
images in batches of one size (cameras of different sizes never share a batch), a horizontal flip
of each batch with probability 1/2. Seeded: the weights from ``torch.manual_seed(seed)``, the
batch order and the flips from a generator of the same seed, so one seed and one thread give one
model. The images are read once and kept in memory as uint8 (a 160 x 96 image holds 61 kB).

:func:`save_image_teacher` writes plain values through :func:`train.runtime.checkpoint.save_checkpoint`
(the network's spec under ``config["model"]``, the training options under ``config["training"]``),
read back by :func:`load_image_teacher` with ``torch.load(weights_only=True)``, refused in one line
naming the file when it is no image teacher or predicts another number of classes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from train.data.cameras.camera_images import NO_CLASS, CameraImage, read_classes, read_colour
from train.models.image_segmenter import ImageSegmenter, build_image_segmenter, colour_batch
from train.runtime.checkpoint import load_checkpoint, save_checkpoint
from train.runtime.checkpoint_errors import CheckpointError

def _batches(sizes: list[tuple[int, int]], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch's batches: the image indices of each size shuffled and cut into batches, the batches
    then shuffled together."""
    batches = []
    for size in sorted(set(sizes)):
        members = torch.tensor([i for i, s in enumerate(sizes) if s == size])
        members = members[torch.randperm(len(members), generator=generator)].tolist()
        batches += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def fit(images: list[CameraImage], num_classes: int, epochs: int, batch_size: int, lr: float, seed: int,
        on_epoch: Callable[[int, float, float], None] | None = None) -> tuple[ImageSegmenter, list[float]]:
    """The network trained on ``images`` (module docstring) and its mean training loss per epoch;
    ``on_epoch(epoch, loss, pixel accuracy)`` is called after each epoch."""
    colours = [read_colour(image) for image in images]
    classes = [read_classes(image, num_classes) for image in images]
    if not any((c != NO_CLASS).any() for c in classes):
        raise ValueError(f"no pixel of the {len(images)} class images (first: {images[0].classes}) holds a class")
    torch.manual_seed(seed)
    model = ImageSegmenter(num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    for epoch in range(epochs):
        loss_sum = correct = labelled = 0.0
        for batch in _batches([c.shape for c in classes], batch_size, generator):
            x = colour_batch(np.stack([colours[i] for i in batch]))
            y = torch.from_numpy(np.stack([classes[i] for i in batch])).long()
            if bool(torch.rand((), generator=generator) < 0.5):
                x, y = x.flip(-1), y.flip(-1)
            logits, _ = model(x)
            keep = y != NO_CLASS
            n = int(keep.sum())
            if n == 0:
                continue
            loss = F.cross_entropy(logits, y, ignore_index=NO_CLASS, reduction="sum") / n
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * n
            correct += float((logits.detach().argmax(1) == y)[keep].sum())
            labelled += n
        losses.append(loss_sum / labelled)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1], correct / labelled)
    model.eval()
    return model, losses


def save_image_teacher(path: Path, model: ImageSegmenter, epochs: int, training: dict[str, Any],
                       extra: dict[str, Any]) -> None:
    """The trained network, its spec and ``training`` options, and ``extra`` (losses, validation IoU)."""
    save_checkpoint(path, model, None, None, None, step=0, epoch=epochs,
                    config={"model": model.spec(), "training": training}, extra=extra)


def load_image_teacher(path: Path, num_classes: int) -> ImageSegmenter:
    """The network of ``path`` (written by :func:`save_image_teacher`), in evaluation mode; refused in
    one line naming the file when it is unreadable, no image teacher, or of another class count."""
    state = load_checkpoint(path)
    spec = state.get("config", {}).get("model") if isinstance(state.get("config"), dict) else None
    if not isinstance(spec, dict) or set(spec) != {"num_classes", "widths"}:
        raise CheckpointError(f"{path}: not a checkpoint of python -m train.image_teacher (no image network spec)")
    if spec["num_classes"] != num_classes:
        raise CheckpointError(f"{path}: its network predicts {spec['num_classes']} classes; this data set has "
                              f"{num_classes}")
    model = build_image_segmenter(spec)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit its own spec {spec} "
                              f"({str(err).splitlines()[0]})") from None
    return model.eval()
