"""Pointcept PTv3 checkpoints <-> our PTv3 (spec H): ``from_pointcept`` and ``to_pointcept``.

Pointcept trains PTv3 ("PT-v3m1") inside its ``DefaultSegmentorV2``: the backbone's tensors sit
under ``backbone.`` and the ``Linear(64, K)`` classifier under ``seg_head.``; a checkpoint written
under DistributedDataParallel prefixes every key with ``module.``. Our modules map one to one onto
its modules (the name table is ``_BLOCK_NAMES`` and ``pointcept_key``); every tensor is copied
as it is, so the two functions round-trip every tensor exactly. Sparse-conv weights are spconv
2.x's KRSC layout ``(C_out, k, k, k, C_in)`` in both; spconv 1.x's RSCK layout
``(k, k, k, C_in, C_out)`` is accepted on import and transposed.

A model imported with ``from_pointcept`` runs with upstream's behaviour: its first block after each
unpooling feeds its CPE the skip branch only (``PTv3Config.upstream_unpool_cpe``, spec A7 note).
Configurations we cannot express are refused by the keys they leave in the state dict: relative
position encoding (``enable_rpe``, keys ``attn.rpe.*``) and PDNorm (``pdnorm_bn`` / ``pdnorm_ln``,
keys ``<norm>.norm.<condition>.*`` and ``modulation.*``). Per-stage patch sizes, attention heads
and serialization orders leave no trace in the tensors; they come from the ``preset`` (and
``overrides``), which must match the Pointcept config the checkpoint was trained with, or from
that config itself: ``read_model_config`` reads its ``model`` entry as literals (the file is never
run) and ``pointcept_overrides`` turns it into overrides, refusing what we cannot express.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from train.models.ptv3 import PTv3, build_model

DDP_PREFIX = "module."

# Our per-block module names -> Pointcept's (Block: cpe = PointSequential(SubMConv3d, Linear,
# LayerNorm), norm1/norm2 = PointSequential(LayerNorm), mlp = PointSequential(MLP(fc1, fc2))).
_BLOCK_NAMES = {
    "cpe_conv": "cpe.0", "cpe_linear": "cpe.1", "cpe_norm": "cpe.2", "norm1": "norm1.0",
    "attn.qkv": "attn.qkv", "attn.proj": "attn.proj", "norm2": "norm2.0", "mlp.0": "mlp.0.fc1",
    "mlp.3": "mlp.0.fc2",
}
_BLOCK_KEY = re.compile(r"^(enc|dec)_blocks\.(\d+)\.(\d+)\.(.+)\.(\w+)$")
_POOL_KEY = re.compile(r"^enc_pool\.(\d+)\.(proj|norm)\.(\w+)$")
_UNPOOL_KEY = re.compile(r"^dec_unpool\.(\d+)\.(proj|proj_skip)\.([01])\.(\w+)$")
_RPE_KEY = re.compile(r"\.attn\.rpe\.")
# PDNorm holds one norm per condition in a ModuleList called ``norm`` inside the norm slot. Our
# layout's only ``.norm.<i>.`` is the pooling BatchNorm ``down.norm.0.<param>``.
_PDNORM_KEY = re.compile(r"(\.norm\.(\d+)\.\w+$|\.modulation\.)")
_POOL_NORM_KEY = re.compile(r"\.down\.norm\.0\.\w+$")


def pointcept_key(model: PTv3, key: str) -> str:
    """Pointcept's name (DefaultSegmentorV2 layout, no ``module.``) of our state-dict ``key``."""
    if key == "head.weight" or key == "head.bias":
        return "seg_" + key
    if key.startswith("stem_conv."):
        return "backbone.embedding.stem.conv." + key.split(".", 1)[1]
    if key.startswith("stem_norm."):
        return "backbone.embedding.stem.norm." + key.split(".", 1)[1]
    num_dec = len(model.config.dec_depths)
    if m := _BLOCK_KEY.match(key):
        part, stage, block, module, param = m.groups()
        stage_no = int(stage) if part == "enc" else num_dec - 1 - int(stage)  # decoders run coarsest first
        return f"backbone.{part}.{part}{stage_no}.block{block}.{_BLOCK_NAMES[module]}.{param}"
    if m := _POOL_KEY.match(key):
        pool, module, param = m.groups()
        return f"backbone.enc.enc{int(pool) + 1}.down.{'proj' if module == 'proj' else 'norm.0'}.{param}"
    if m := _UNPOOL_KEY.match(key):
        unpool, branch, layer, param = m.groups()
        return f"backbone.dec.dec{num_dec - 1 - int(unpool)}.up.{branch}.{layer}.{param}"
    raise KeyError(f"no Pointcept name for our state-dict key {key!r}")


def to_pointcept(model: PTv3) -> dict[str, torch.Tensor]:
    """State dict of ``model`` in Pointcept's DefaultSegmentorV2 layout (the same tensors)."""
    return {pointcept_key(model, k): v for k, v in model.state_dict().items()}


def strip_ddp_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict without DistributedDataParallel's ``module.`` prefix (when every key has it)."""
    if state_dict and all(k.startswith(DDP_PREFIX) for k in state_dict):
        return {k[len(DDP_PREFIX):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def is_pointcept_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """True when the keys look like a Pointcept PTv3 segmentor (a ``backbone.embedding.stem`` key)."""
    return any(k.startswith("backbone.embedding.stem.") for k in strip_ddp_prefix(state_dict))


def _refuse_unsupported(keys: list[str]) -> None:
    rpe = [k for k in keys if _RPE_KEY.search(k)]
    if rpe:
        raise ValueError(
            f"the checkpoint uses relative position encoding (enable_rpe=True; {len(rpe)} keys such as "
            f"{rpe[0]!r}), which our PTv3 does not implement: use a checkpoint trained with "
            "enable_rpe=False (Pointcept's LiDAR configs, which use flash attention)"
        )
    pdnorm = [k for k in keys if _PDNORM_KEY.search(k) and not _POOL_NORM_KEY.search(k)]
    if pdnorm:
        branches = sorted({m.group(2) for k in pdnorm if (m := _PDNORM_KEY.search(k)) and m.group(2)})
        raise ValueError(
            f"the checkpoint uses PDNorm (pdnorm_bn/pdnorm_ln: {len(branches)} condition branch(es) per "
            f"norm, {len(pdnorm)} keys such as {pdnorm[0]!r}; Point Prompt Training), which our PTv3 does "
            "not implement: use a checkpoint trained with pdnorm_bn=False and pdnorm_ln=False"
        )


def _as_krsc(value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """A 5-D sparse-conv weight in RSCK (spconv 1.x) transposed to KRSC when that fits ``shape``."""
    if value.dim() == 5 and value.shape != shape and value.permute(4, 0, 1, 2, 3).shape == shape:
        return value.permute(4, 0, 1, 2, 3).contiguous()
    return value


_LISTED = 3  # names of each kind of misfit a refusal lists


def from_pointcept(
    state_dict: Mapping[str, torch.Tensor], num_classes: int, preset: str = "teacher", in_channels: int = 4,
    **overrides: Any,
) -> PTv3:
    """Our PTv3 (``build_model(preset, num_classes, in_channels, **overrides)``) holding the weights
    of a Pointcept PTv3 segmentor ``state_dict`` (keys ``backbone.*`` and ``seg_head.*``, with or
    without ``module.``), with upstream's behaviour (``upstream_unpool_cpe=True``).

    Every tensor is matched by name and shape; anything that does not fit raises a one-line ValueError
    counting the checkpoint keys we have no place for, our keys the checkpoint lacks, and shape
    mismatches, with the first few of each.
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError("state_dict must map names to tensors (a Pointcept checkpoint's 'state_dict' entry)")
    source = strip_ddp_prefix(state_dict)
    _refuse_unsupported(list(source))
    model = build_model(preset, num_classes, in_channels, **{**overrides, "upstream_unpool_cpe": True})
    ours = model.state_dict()
    names = {pointcept_key(model, k): k for k in ours}
    unexpected = sorted(set(source) - set(names))
    missing = sorted(set(names) - set(source))
    loaded: dict[str, torch.Tensor] = {}
    mismatched = []
    for pc_name in sorted(set(names) & set(source)):
        key = names[pc_name]
        value = _as_krsc(source[pc_name], ours[key].shape)
        if value.shape != ours[key].shape:
            mismatched.append(f"{pc_name}: checkpoint {tuple(source[pc_name].shape)}, preset {preset!r} "
                              f"with {num_classes} classes expects {tuple(ours[key].shape)}")
        loaded[key] = value
    if unexpected or missing or mismatched:
        parts = [f"{title} ({len(items)}): {', '.join(items[:_LISTED])}" + (", ..." if len(items) > _LISTED else "")
                 for title, items in (("checkpoint keys with no place in our model", unexpected),
                                      ("our keys missing from the checkpoint", missing),
                                      ("shape mismatches", mismatched)) if items]
        raise ValueError(f"the Pointcept state dict does not fit our PTv3 preset {preset!r} (num_classes={num_classes}, "
                         f"in_channels={in_channels}): {'; '.join(parts)}. Pick the preset (and --teacher-overrides) "
                         "matching the Pointcept config it was trained with.")
    model.load_state_dict(loaded, strict=True)
    return model


def pointcept_config(model: PTv3) -> dict[str, Any]:
    """The Pointcept ``model`` config (DefaultSegmentorV2 around PT-v3m1) that rebuilds ``model``'s
    architecture, so its exported state dict loads there."""
    cfg = model.config
    return dict(
        type="DefaultSegmentorV2", num_classes=model.num_classes, backbone_out_channels=cfg.dec_channels[0],
        backbone=dict(
            type="PT-v3m1", in_channels=model.in_channels, order=list(cfg.orders), stride=(2,) * (len(cfg.enc_depths) - 1),
            enc_depths=cfg.enc_depths, enc_channels=cfg.enc_channels, enc_num_head=cfg.enc_heads,
            enc_patch_size=(cfg.patch_size,) * len(cfg.enc_depths), dec_depths=cfg.dec_depths,
            dec_channels=cfg.dec_channels, dec_num_head=cfg.dec_heads,
            dec_patch_size=(cfg.patch_size,) * len(cfg.dec_depths), mlp_ratio=cfg.mlp_ratio, qkv_bias=True,
            drop_path=cfg.drop_path, shuffle_orders=True, enable_rpe=False, enable_flash=True,
            upcast_attention=False, upcast_softmax=False, cls_mode=False, pdnorm_bn=False, pdnorm_ln=False,
        ),
    )


def read_model_config(path: str | Path) -> dict[str, Any]:
    """The ``model = dict(...)`` entry of a Pointcept config file (Pointcept saves the resolved one as
    ``<experiment>/config.py``), read as literals without running the file."""
    p = Path(path)
    try:
        tree = ast.parse(p.read_text(encoding="utf-8"), filename=str(p))
    except SyntaxError as err:
        raise ValueError(f"{p} is not a Python config file ({err.msg}, line {err.lineno})") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["model"]:
            try:
                value = _literal(node.value)
            except ValueError as err:
                raise ValueError(f"{p}: its model entry is not plain literals ({err}, line {node.lineno}); "
                                 "pass the settings as --teacher-overrides instead and move this file away") from None
            if isinstance(value, dict):
                return value
    raise ValueError(f"{p} has no 'model = dict(...)' entry")


def _literal(node: ast.expr) -> Any:
    """A literal expression, where ``dict(k=v, ...)`` counts as a literal (Pointcept's config style)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args \
            and all(kw.arg is not None for kw in node.keywords):
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ValueError(f"{ast.unparse(node)!r} is not a literal") from None


def pointcept_overrides(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """``build_model`` overrides for a Pointcept ``model`` config (DefaultSegmentorV2 around PT-v3m1);
    ValueError naming each setting we cannot express (RPE, PDNorm, per-stage patch sizes, ...)."""
    bb = model_config.get("backbone", {})
    if model_config.get("type") != "DefaultSegmentorV2" or bb.get("type") != "PT-v3m1":
        raise ValueError(f"the config's model is {model_config.get('type')!r} around {bb.get('type')!r}; "
                         "only DefaultSegmentorV2 around PT-v3m1 maps onto our PTv3")
    needed = ("order", "enc_depths", "enc_channels", "enc_num_head", "enc_patch_size", "dec_depths", "dec_channels",
              "dec_num_head", "dec_patch_size")
    absent = [k for k in needed if k not in bb]
    if absent:
        raise ValueError(f"the config's backbone lacks {absent}: pass the architecture as --teacher-overrides")
    patches = {*bb["enc_patch_size"], *bb["dec_patch_size"]}
    mlp_ratio = bb.get("mlp_ratio", 4)
    unsupported = {
        "enable_rpe=True (relative position encoding)": bool(bb.get("enable_rpe", False)),
        "pdnorm_bn/pdnorm_ln=True (PDNorm)": bool(bb.get("pdnorm_bn", False) or bb.get("pdnorm_ln", False)),
        f"per-stage patch sizes {sorted(patches)} (we use one for every stage)": len(patches) != 1,
        "cls_mode=True (no decoder)": bool(bb.get("cls_mode", False)),
        "pre_norm=False": not bb.get("pre_norm", True),
        f"stride {bb.get('stride')} (we pool by 2)": any(s != 2 for s in bb.get("stride", (2,))),
        "qkv_bias=False or qk_scale set": not bb.get("qkv_bias", True) or bb.get("qk_scale") is not None,
        f"mlp_ratio {mlp_ratio} (we need a whole number)": float(mlp_ratio) != int(mlp_ratio),
    }
    refused = [name for name, bad in unsupported.items() if bad]
    if refused:
        raise ValueError(f"the Pointcept config uses settings our PTv3 cannot express: {'; '.join(refused)}")
    order = bb["order"]
    return dict(
        orders=(order,) if isinstance(order, str) else tuple(order), enc_depths=tuple(bb["enc_depths"]),
        enc_channels=tuple(bb["enc_channels"]), enc_heads=tuple(bb["enc_num_head"]), dec_depths=tuple(bb["dec_depths"]),
        dec_channels=tuple(bb["dec_channels"]), dec_heads=tuple(bb["dec_num_head"]), patch_size=patches.pop(),
        mlp_ratio=int(mlp_ratio), **({"drop_path": float(bb["drop_path"])} if "drop_path" in bb else {}),
    )
