"""The one line ``python -m train.run`` prints at its start: which sparse convolution, attention,
TPS kernel and DataLoader workers the run's stages will use (decided as the models, the steps and
``--num-workers`` decide them, so the line and the run cannot disagree)."""
from __future__ import annotations

from typing import Sequence

import torch

from train.config import RunConfig
from train.engine.loop import distill_settings, model_spec


def backends_line(cfg: RunConfig, stages: Sequence[str], device: torch.device) -> str:
    """The sparse convolution, attention, TPS and DataLoader workers that ``stages`` of ``cfg`` on
    ``device`` use, decided as the models (``train.models``), the steps (``fast.tps.auto_tps_place``)
    and ``--num-workers`` decide them."""
    from fast.tps import auto_tps_place
    from train.models import PRESETS
    from train.models.attention import uses_flash
    from train.models.sparse_conv import uses_spconv

    cuda = device.type == "cuda"
    convs, attentions = set(), set()
    for kind in dict.fromkeys("teacher" if s == "teacher" else "student" for s in stages):
        overrides = model_spec(cfg, kind, 1, device).overrides
        convs.add("spconv" if uses_spconv(overrides.get("conv_backend", "auto"), cuda) else "ours (torch)")
        flash = uses_flash(overrides.get("attn_backend", "auto"), cuda, half=cfg.amp)  # AMP: fp16/bf16 on CUDA
        attentions.add("flash-attn" if flash else "PyTorch SDPA")
    if not any(distill_settings(cfg, s).active("topo") for s in stages):
        tps = "not used (no topological term)"
    elif cfg.topo_tps == "auto" and cfg.teacher == "images":
        tps = "auto (decided at the first step, on the width of the camera teacher's 2D features)"
    elif cfg.topo_tps == "auto":
        teacher = model_spec(cfg, "teacher", 1, device)
        width = {**PRESETS[teacher.preset], **teacher.overrides}["dec_channels"][0]
        place, why = auto_tps_place(device, width)
        tps = f"{place} ({why})"
    else:
        tps = f"{cfg.topo_tps} (--topo-tps {cfg.topo_tps})"
    return (f"backends on {device.type}: convolution {' / '.join(sorted(convs))}; attention "
            f"{' / '.join(sorted(attentions))}; TPS {tps}; DataLoader workers {cfg.num_workers} per process")
