"""The one line ``python -m train.run`` prints at its start names the convolution, attention, TPS and loader
workers the run uses, decided by the same functions the models and steps call (``uses_spconv``,
``uses_flash``, ``fast.tps.auto_tps_place``)."""
from __future__ import annotations

import sys

import pytest
import torch

import train.models.attention
import train.models.sparse_conv
from train.config import STAGE_ORDER
from train.options.resolve import resolve
from train.runner.backends import backends_line

CUDA = torch.device("cuda")  # only named: nothing is put on it


def test_cpu_run_names_our_convolution_sdpa_host_tps_and_its_workers() -> None:
    cfg = resolve(["--dataset", "synthetic", "--device", "cpu", "--num-workers", "3"])
    assert backends_line(cfg, STAGE_ORDER, torch.device("cpu")) == (
        "backends on cpu: convolution ours (torch); attention PyTorch SDPA; TPS host (the features are not on a "
        "CUDA device); DataLoader workers 3 per process")
    student = resolve(["--dataset", "synthetic", "--device", "cpu", "--stage", "student"])
    assert "TPS not used (no topological term)" in backends_line(student, ("student",), torch.device("cpu"))


@pytest.fixture
def accelerators(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """spconv and flash-attn installed, the TPS kernel passing its check; returns the widths asked."""
    widths: list[int] = []
    monkeypatch.setattr(train.models.sparse_conv, "spconv_imports", lambda: True)
    monkeypatch.setattr(train.models.attention, "flash_attn_available", lambda: True)

    def place(device: torch.device, width: int) -> tuple[str, str]:
        widths.append(width)
        return "device", "checked"

    monkeypatch.setattr(sys.modules["fast.tps"], "auto_tps_place", place)  # the package name fast.tps is the function
    return widths


def test_cuda_run_names_spconv_flash_attn_and_device_tps(accelerators: list[int]) -> None:
    cfg = resolve(["--dataset", "nuscenes", "--device", "cpu", "--teacher-checkpoint", __file__,
                   "--stage", "distill"])
    line = backends_line(cfg, ("distill",), CUDA)
    assert line.startswith("backends on cuda: convolution spconv; attention flash-attn; TPS device (checked);")
    assert accelerators == [64]  # TPS runs on the teacher's embedding: dec_channels[0] of the paper teacher


def test_options_that_switch_an_accelerator_off_show_in_the_line(accelerators: list[int]) -> None:
    cfg = resolve(["--dataset", "nuscenes", "--device", "cpu", "--conv-backend", "torch", "--no-amp",
                   "--topo-tps", "host", "--stage", "teacher"])
    assert "convolution ours (torch); attention PyTorch SDPA; TPS not used" in backends_line(cfg, ("teacher",), CUDA)
    sdpa_student = resolve(["--dataset", "nuscenes", "--device", "cpu"])
    sdpa_student.student_overrides = {"attn_backend": "sdpa"}
    sdpa_student.topo_tps = "host"
    line = backends_line(sdpa_student, STAGE_ORDER, CUDA)
    assert "attention PyTorch SDPA / flash-attn; TPS host (--topo-tps host)" in line and accelerators == []
