"""Point Transformer V3 ("m1", spec A) with the taps the distillation needs; ``build_model``.

Stem (spec A3) -> encoder stages (stage 0 blocks; stage s > 0: pooling then blocks) -> decoder
stages from coarse to fine (unpooling then blocks) -> Linear head (spec A8). The forward returns a
``ModelOutput``: logits, the 64-channel pre-classifier embedding (decisions 12), every decoder
stage output (decisions 17, paper Table 10 "all decoder") with the index map that brings it back
to the input points and its END offsets.

Presets (paper Table 8 = spec A8): ``teacher`` (46.16M parameters with 16 classes) and ``student``
(2.78M). Two small presets for the synthetic CPU demo (not in the paper), see ``PRESETS``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from train.models.attention import uses_flash
from train.models.blocks import Block, SerializedPooling, SerializedUnpooling, curve_permutation, point_batch_norm
from train.models.device_plan import on_device
from train.models.plan import BatchPlan, PlanKey
from train.models.point import PointLevel, check_input
from train.models.serialization import ORDERS
from train.models.sparse_conv import SubMConv3d, uses_spconv


@dataclass
class PTv3Config:
    """Architecture hyper-parameters (spec A8). Channel/depth tuples are per stage."""

    enc_depths: tuple[int, ...]
    enc_channels: tuple[int, ...]
    enc_heads: tuple[int, ...]
    dec_depths: tuple[int, ...]
    dec_channels: tuple[int, ...]
    dec_heads: tuple[int, ...]
    drop_path: float
    patch_size: int = 1024
    mlp_ratio: int = 4
    orders: tuple[str, ...] = ORDERS
    stem_kernel: int = 5
    conv_backend: str = "auto"
    attn_backend: str = "auto"
    # True: the first block after each unpooling feeds its CPE convolution proj_skip(parent) alone,
    # as Pointcept's PTv3 does (spec A7 note); on for checkpoints imported from Pointcept.
    upstream_unpool_cpe: bool = False

    def __post_init__(self) -> None:
        s = len(self.enc_depths)
        if not (len(self.enc_channels) == len(self.enc_heads) == s):
            raise ValueError("enc_depths, enc_channels and enc_heads need one entry per encoder stage")
        if not (len(self.dec_depths) == len(self.dec_channels) == len(self.dec_heads) == s - 1):
            raise ValueError("dec_depths, dec_channels and dec_heads need one entry per decoder stage (stages - 1)")
        if self.dec_channels[0] != 64:
            raise ValueError(f"dec_channels[0] is the embedding width and must be 64 (decisions 12), got {self.dec_channels[0]}")


PRESETS: dict[str, dict[str, Any]] = {
    # Paper Table 8 / spec A8.
    "teacher": dict(
        enc_depths=(2, 2, 2, 6, 2), enc_channels=(32, 64, 128, 256, 512), enc_heads=(2, 4, 8, 16, 32),
        dec_depths=(2, 2, 2, 2), dec_channels=(64, 64, 128, 256), dec_heads=(4, 4, 8, 16), drop_path=0.3,
    ),
    "student": dict(
        enc_depths=(1, 1, 1, 2, 1), enc_channels=(16, 16, 32, 64, 128), enc_heads=(1, 1, 2, 4, 8),
        dec_depths=(1, 1, 1, 1), dec_channels=(64, 64, 128, 128), dec_heads=(2, 2, 4, 8), drop_path=0.15,
    ),
    # CPU demo presets for the synthetic end-to-end run on a 2-core CPU (not paper models). Same
    # five-stage layout, serialized patch attention and 64-channel embedding as the paper models,
    # shrunk so one forward+backward on 2 x 15k points takes about a second (teacher-demo) or a
    # fraction of it (student-demo). teacher-demo has ~10x the parameters of student-demo (2.56M
    # vs 0.26M), like the paper's 16x gap. student-demo has no block at full resolution (decoder
    # stage 0 is the unpooling alone), which halves its cost; its embedding is still 64 channels.
    "teacher-demo": dict(
        enc_depths=(1, 1, 1, 2, 1), enc_channels=(16, 32, 64, 96, 128), enc_heads=(1, 2, 4, 6, 8),
        dec_depths=(1, 1, 1, 1), dec_channels=(64, 64, 64, 96), dec_heads=(2, 2, 4, 6), drop_path=0.1,
        patch_size=256,
    ),
    "student-demo": dict(
        enc_depths=(1, 1, 1, 1, 1), enc_channels=(8, 16, 24, 32, 48), enc_heads=(1, 1, 2, 2, 3),
        dec_depths=(0, 1, 1, 1), dec_channels=(64, 16, 24, 32), dec_heads=(2, 1, 2, 2), drop_path=0.05,
        patch_size=256,
    ),
}


@dataclass
class ModelOutput:
    """Model outputs and distillation taps.

    logits (N, K); embedding (N, 64) pre-classifier features (the last decoder stage output);
    decoder_feats: every decoder stage output (N_l, C_l) in computation order (coarsest first; the
    tensors used downstream, so ``autograd.grad(loss, decoder_feats)`` works); decoder_index (N,)
    int64 per stage: input point -> stage point; decoder_offsets (B,) int64 END offsets per stage.
    """

    logits: torch.Tensor
    embedding: torch.Tensor
    decoder_feats: list[torch.Tensor] = field(default_factory=list)
    decoder_index: list[torch.Tensor] = field(default_factory=list)
    decoder_offsets: list[torch.Tensor] = field(default_factory=list)


class PTv3(nn.Module):
    """Point Transformer V3 segmentation network (spec A).

    ``deterministic``: when True the serialization rows keep their fixed order (no shuffle per
    forward or per pooling); use it for evaluation and tests. It is independent of ``eval()``.
    """

    def __init__(self, config: PTv3Config, num_classes: int, in_channels: int = 4, deterministic: bool = False):
        super().__init__()
        self.config = config
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.deterministic = deterministic
        cfg = config
        k = len(cfg.orders)
        self.stem_conv = SubMConv3d(in_channels, cfg.enc_channels[0], cfg.stem_kernel, bias=False, backend=cfg.conv_backend)
        self.stem_norm = point_batch_norm(cfg.enc_channels[0])
        self.stem_act = nn.GELU()

        def blocks(depth: int, channels: int, heads: int, rates: list[float]) -> nn.ModuleList:
            return nn.ModuleList(
                Block(channels, heads, cfg.patch_size, rates[i], order_row=i % k, mlp_ratio=cfg.mlp_ratio,
                      conv_backend=cfg.conv_backend, attn_backend=cfg.attn_backend)
                for i in range(depth)
            )

        enc_rates = torch.linspace(0, cfg.drop_path, sum(cfg.enc_depths)).tolist()
        self.enc_pool = nn.ModuleList()
        self.enc_blocks = nn.ModuleList()
        for s, depth in enumerate(cfg.enc_depths):
            if s > 0:
                self.enc_pool.append(SerializedPooling(cfg.enc_channels[s - 1], cfg.enc_channels[s]))
            first = sum(cfg.enc_depths[:s])
            self.enc_blocks.append(blocks(depth, cfg.enc_channels[s], cfg.enc_heads[s], enc_rates[first:first + depth]))

        dec_rates = torch.linspace(0, cfg.drop_path, sum(cfg.dec_depths)).tolist()
        # Decoder modules are stored coarsest first (the order they run): index i <-> stage S-2-i.
        self.dec_unpool = nn.ModuleList()
        self.dec_blocks = nn.ModuleList()
        for s in reversed(range(len(cfg.dec_depths))):
            coarse = cfg.enc_channels[-1] if s == len(cfg.dec_depths) - 1 else cfg.dec_channels[s + 1]
            self.dec_unpool.append(SerializedUnpooling(coarse, cfg.enc_channels[s], cfg.dec_channels[s]))
            first = sum(cfg.dec_depths[:s])
            rates = dec_rates[first:first + cfg.dec_depths[s]][::-1]
            self.dec_blocks.append(blocks(cfg.dec_depths[s], cfg.dec_channels[s], cfg.dec_heads[s], rates))
        self.head = nn.Linear(cfg.dec_channels[0], num_classes)

    def plan_items(self, device: torch.device) -> tuple[PlanKey, ...]:
        """The batch-plan items (``train.models.plan.PlanKey``) this model's forward on ``device``
        reads, so that a loader can build them where the batch is prepared (decision 47): per
        level, the convolutions' rulebooks (or spconv's indices where spconv runs them), the
        attention patches with their key mask (and the variable-length form where flash
        attention may run them), and the pooling tables."""
        cfg = self.config
        cuda = torch.device(device).type == "cuda"
        spconv = uses_spconv(cfg.conv_backend, cuda)
        flash = uses_flash(cfg.attn_backend, cuda, half=True)  # where it may run: under mixed precision

        def conv(level: int, kernel_size: int) -> PlanKey:
            return ("spconv", level) if spconv else ("rulebook", level, kernel_size)

        items = {conv(0, cfg.stem_kernel)}
        for s, depth in enumerate(cfg.enc_depths):
            if depth or (s < len(cfg.dec_depths) and cfg.dec_depths[s]):
                items |= {conv(s, 3), ("patches", s, cfg.patch_size), ("patch_mask", s, cfg.patch_size)}
                if flash:
                    items.add(("varlen", s, cfg.patch_size))
            if s > 0:
                items.add(("pool", s))
        return tuple(sorted(items, key=str))

    def _input_level(self, data: dict[str, Any]) -> PointLevel:
        check_input(data, self.in_channels)
        feat, plan = data["feat"], data.get("plan")
        if plan is not None and (not isinstance(plan, BatchPlan) or plan.num_points != feat.shape[0]
                                 or plan.num_clouds != data["offset"].shape[0]):
            raise ValueError("data['plan'] does not describe this batch: build it with "
                             "BatchPlan(grid_coord, offset) from the same batch")
        if plan is None or plan.orders != tuple(self.config.orders):  # a model of other curves plans its own
            plan = BatchPlan(data["grid_coord"], data["offset"], self.config.orders, self.plan_items(feat.device))
        perm = curve_permutation(len(plan.orders), not self.deterministic, feat.device)
        return PointLevel(feat, on_device(plan, feat.device), 0, perm=perm, input_coord=data["coord"])

    def forward(self, data: dict[str, Any]) -> ModelOutput:
        """``data``: coord, grid_coord, feat, offset (spec A1) and optionally ``plan``, the batch's
        ``BatchPlan`` (built from grid_coord and offset when absent; decision 40)."""
        return self.forward_level(self._input_level(data))

    def forward_level(self, level: PointLevel) -> ModelOutput:
        """The network on the input level (its features and its plan's device side): the forward
        after the input checks, also traced with the plan's arrays as graph inputs (decision 55)."""
        level = level.with_feat(self.stem_act(self.stem_norm(self.stem_conv(level, level.feat))))
        for s, stage in enumerate(self.enc_blocks):
            if s > 0:
                level = self.enc_pool[s - 1](level, shuffle=not self.deterministic)
            for block in stage:
                level = block(level)

        feats: list[torch.Tensor] = []
        indices: list[torch.Tensor] = []
        offsets: list[torch.Tensor] = []
        for i, (unpool, stage) in enumerate(zip(self.dec_unpool, self.dec_blocks)):
            level = unpool(level, stale_cpe=self.config.upstream_unpool_cpe)
            for block in stage:
                level = block(level)
            feats.append(level.feat)
            indices.append(level.plan.level_tensor(level.index, "index"))  # decoder i runs at level S-2-i
            offsets.append(level.offset)
        return ModelOutput(
            logits=self.head(level.feat), embedding=level.feat, decoder_feats=feats,
            decoder_index=indices, decoder_offsets=offsets,
        )


def build_model(kind: str, num_classes: int, in_channels: int = 4, **overrides: Any) -> PTv3:
    """PTv3 from a preset: ``teacher`` / ``student`` (paper Table 8, spec A8), or the CPU demo
    presets ``teacher-demo`` / ``student-demo``. ``overrides`` replace ``PTv3Config`` fields
    (e.g. ``patch_size=128``, ``drop_path=0.0``, ``conv_backend="spconv"``,
    ``upstream_unpool_cpe=True``); ``deterministic=True`` fixes the serialization order.
    """
    if kind not in PRESETS:
        raise ValueError(f"unknown model kind {kind!r}: choose one of {sorted(PRESETS)}")
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes ({num_classes}) and in_channels ({in_channels}) must be >= 1")
    deterministic = bool(overrides.pop("deterministic", False))
    unknown = set(overrides) - set(PTv3Config.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown override(s) {sorted(unknown)}: valid are {sorted(PTv3Config.__dataclass_fields__)}")
    params = {**PRESETS[kind], **overrides}
    for key in ("enc_depths", "enc_channels", "enc_heads", "dec_depths", "dec_channels", "dec_heads", "orders"):
        if key in params:
            params[key] = tuple(params[key])
    return PTv3(PTv3Config(**params), num_classes, in_channels, deterministic=deterministic)
