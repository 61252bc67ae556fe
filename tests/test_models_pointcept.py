"""Pointcept PTv3 checkpoints in and out (spec H): the key/shape table, exact round trips, refusals,
upstream's unpooling CPE input (spec A7 note), ``--teacher-checkpoint`` and the export command.

``pointcept_table`` is written here from Pointcept's public model definition (PT-v3m1 inside
DefaultSegmentorV2), independently of ``train.models.pointcept``: the modules are
``embedding.stem.{conv,norm}``, per encoder stage ``enc.enc{s}.down.{proj,norm.0}`` (s > 0) and
``enc.enc{s}.block{i}``, per decoder stage ``dec.dec{s}.up.{proj,proj_skip}.{0,1}`` and
``dec.dec{s}.block{i}``; a block is ``cpe.0`` (SubMConv3d k=3, bias, weight (C, 3, 3, 3, C)),
``cpe.1`` (Linear), ``cpe.2`` (LayerNorm), ``norm1.0``, ``attn.qkv`` (C -> 3C), ``attn.proj``,
``norm2.0``, ``mlp.0.fc1`` (C -> 4C), ``mlp.0.fc2``; the stem conv is k=5 without bias.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from train.models import build_model, from_pointcept, to_pointcept
from train.models.pointcept import pointcept_config

Shape = tuple[int, ...]


def _bn(prefix: str, c: int) -> dict[str, Shape]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _linear(prefix: str, c_in: int, c_out: int) -> dict[str, Shape]:
    return {f"{prefix}.weight": (c_out, c_in), f"{prefix}.bias": (c_out,)}


def _block(prefix: str, c: int) -> dict[str, Shape]:
    table = {f"{prefix}.cpe.0.weight": (c, 3, 3, 3, c), f"{prefix}.cpe.0.bias": (c,)}
    table |= _linear(f"{prefix}.cpe.1", c, c)
    for norm in ("cpe.2", "norm1.0", "norm2.0"):
        table |= {f"{prefix}.{norm}.weight": (c,), f"{prefix}.{norm}.bias": (c,)}
    table |= _linear(f"{prefix}.attn.qkv", c, 3 * c) | _linear(f"{prefix}.attn.proj", c, c)
    return table | _linear(f"{prefix}.mlp.0.fc1", c, 4 * c) | _linear(f"{prefix}.mlp.0.fc2", 4 * c, c)


def pointcept_table(in_channels: int, enc_depths: Shape, enc_channels: Shape, dec_depths: Shape,
                    dec_channels: Shape, num_classes: int) -> dict[str, Shape]:
    """Every key and shape of a Pointcept DefaultSegmentorV2(PT-v3m1) state dict."""
    b = "backbone"
    table = {f"{b}.embedding.stem.conv.weight": (enc_channels[0], 5, 5, 5, in_channels)}
    table |= _bn(f"{b}.embedding.stem.norm", enc_channels[0])
    for s, depth in enumerate(enc_depths):
        if s > 0:
            table |= _linear(f"{b}.enc.enc{s}.down.proj", enc_channels[s - 1], enc_channels[s])
            table |= _bn(f"{b}.enc.enc{s}.down.norm.0", enc_channels[s])
        for i in range(depth):
            table |= _block(f"{b}.enc.enc{s}.block{i}", enc_channels[s])
    coarse = list(dec_channels) + [enc_channels[-1]]
    for s, depth in enumerate(dec_depths):
        up = f"{b}.dec.dec{s}.up"
        table |= _linear(f"{up}.proj.0", coarse[s + 1], dec_channels[s]) | _bn(f"{up}.proj.1", dec_channels[s])
        table |= _linear(f"{up}.proj_skip.0", enc_channels[s], dec_channels[s]) | _bn(f"{up}.proj_skip.1", dec_channels[s])
        for i in range(depth):
            table |= _block(f"{b}.dec.dec{s}.block{i}", dec_channels[s])
    return table | _linear("seg_head", dec_channels[0], num_classes)


# Pointcept's configs/nuscenes/semseg-pt-v3m1-0-base.py (its default LiDAR PTv3) = the paper teacher.
NUSCENES_BASE = dict(in_channels=4, enc_depths=(2, 2, 2, 6, 2), enc_channels=(32, 64, 128, 256, 512),
                     dec_depths=(2, 2, 2, 2), dec_channels=(64, 64, 128, 256), num_classes=16)
STUDENT = dict(in_channels=4, enc_depths=(1, 1, 1, 2, 1), enc_channels=(16, 16, 32, 64, 128),
               dec_depths=(1, 1, 1, 1), dec_channels=(64, 64, 128, 128), num_classes=16)


@pytest.mark.parametrize("preset,table", [("teacher", NUSCENES_BASE), ("student", STUDENT)])
def test_exported_keys_and_shapes_are_pointcepts(preset: str, table: dict) -> None:
    torch.manual_seed(0)
    exported = to_pointcept(build_model(preset, 16))
    expected = pointcept_table(**table)
    assert {k: tuple(v.shape) for k, v in exported.items()} == expected
    assert sum(v.numel() for k, v in exported.items() if "running" not in k and "num_batches" not in k) == (
        46_159_312 if preset == "teacher" else 2_777_344)  # spec A9


def test_spot_entries_of_the_nuscenes_base_table() -> None:
    table = pointcept_table(**NUSCENES_BASE)
    assert len(table) == 6 + 22 * 18 + 4 * 7 + 4 * 14 + 2
    assert table["backbone.embedding.stem.conv.weight"] == (32, 5, 5, 5, 4)
    assert table["backbone.enc.enc4.down.proj.weight"] == (512, 256)
    assert table["backbone.enc.enc3.block5.cpe.0.weight"] == (256, 3, 3, 3, 256)
    assert table["backbone.enc.enc4.block1.attn.qkv.weight"] == (1536, 512)
    assert table["backbone.dec.dec3.up.proj.0.weight"] == (256, 512)
    assert table["backbone.dec.dec0.up.proj_skip.0.weight"] == (64, 32)
    assert table["backbone.dec.dec0.block1.mlp.0.fc2.weight"] == (64, 256)
    assert table["seg_head.weight"] == (16, 64)


def test_export_config_is_pointcepts_nuscenes_base() -> None:
    cfg = pointcept_config(build_model("teacher", 16))
    assert (cfg["type"], cfg["num_classes"], cfg["backbone_out_channels"]) == ("DefaultSegmentorV2", 16, 64)
    bb = cfg["backbone"]
    assert bb["order"] == ["z", "z-trans", "hilbert", "hilbert-trans"]
    assert (bb["enc_num_head"], bb["dec_num_head"]) == ((2, 4, 8, 16, 32), (4, 4, 8, 16))
    assert (bb["enc_patch_size"], bb["dec_patch_size"]) == ((1024,) * 5, (1024,) * 4)
    assert (bb["stride"], bb["in_channels"], bb["enable_rpe"], bb["pdnorm_bn"]) == ((2, 2, 2, 2), 4, False, False)


def _randomised(preset: str, num_classes: int = 5, **overrides) -> torch.nn.Module:
    torch.manual_seed(1)
    model = build_model(preset, num_classes, **overrides)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if t.dim() == 1 else torch.randn_like(t) * 0.3)  # variances > 0
            else:
                t.fill_(7)
    return model


@pytest.mark.parametrize("ddp", [False, True])
def test_round_trip_is_exact_both_ways(ddp: bool) -> None:
    model = _randomised("student-demo")
    sd = to_pointcept(model)
    back = from_pointcept({("module." if ddp else "") + k: v for k, v in sd.items()}, num_classes=5,
                          preset="student-demo")
    assert back.config.upstream_unpool_cpe and not model.config.upstream_unpool_cpe
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) and ours[k].dtype == theirs[k].dtype for k in ours)
    again = to_pointcept(back)
    assert again.keys() == sd.keys() and all(torch.equal(again[k], sd[k]) for k in sd)


def test_spconv1_weight_layout_is_transposed_on_import() -> None:
    model = _randomised("student-demo")
    sd = to_pointcept(model)
    rsck = {k: (v.permute(1, 2, 3, 4, 0) if v.dim() == 5 else v) for k, v in sd.items()}
    back = from_pointcept(rsck, num_classes=5, preset="student-demo")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))


def test_a_state_dict_that_does_not_fit_is_refused_in_one_line_counting_the_unmatched_keys() -> None:
    sd = to_pointcept(build_model("student-demo", 5))
    del sd["backbone.enc.enc2.block0.attn.proj.bias"]
    sd["backbone.enc.enc2.block1.attn.proj.bias"] = torch.zeros(24)
    sd["backbone.dec.dec1.up.proj.0.weight"] = torch.zeros(16, 99)
    with pytest.raises(ValueError) as err:
        from_pointcept(sd, num_classes=5, preset="student-demo")
    text = str(err.value)
    assert "\n" not in text
    assert "checkpoint keys with no place in our model (1): backbone.enc.enc2.block1.attn.proj.bias;" in text
    assert "our keys missing from the checkpoint (1): backbone.enc.enc2.block0.attn.proj.bias;" in text
    assert "backbone.dec.dec1.up.proj.0.weight: checkpoint (16, 99)" in text
    with pytest.raises(ValueError, match="does not fit our PTv3 preset 'teacher-demo'"):
        from_pointcept(to_pointcept(build_model("student-demo", 5)), num_classes=5, preset="teacher-demo")


@pytest.mark.parametrize("key,message", [
    ("backbone.enc.enc0.block0.attn.rpe.rpe_table", "relative position encoding"),
    ("backbone.enc.enc0.block0.norm1.0.norm.1.weight", "PDNorm"),
    ("backbone.embedding.stem.norm.norm.2.running_mean", "PDNorm"),
    ("backbone.enc.enc1.down.norm.0.norm.0.weight", "PDNorm"),
    ("backbone.dec.dec0.block0.cpe.2.modulation.1.weight", "PDNorm"),
])
def test_configurations_we_cannot_express_are_refused(key: str, message: str) -> None:
    sd = to_pointcept(build_model("student-demo", 5))
    sd[key] = torch.zeros(3)
    with pytest.raises(ValueError, match=message):
        from_pointcept(sd, num_classes=5, preset="student-demo")


# --- upstream's CPE input after unpooling (spec A7 note) ----------------------------------------

def _batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    clouds = []
    for n in (700, 400):
        cells = torch.randperm(40 * 40 * 8, generator=gen)[:n]
        grid = torch.stack([cells // 320, (cells // 8) % 40, cells % 8], 1)
        coord = (grid.double() + 0.5) * 0.05
        clouds.append((grid, torch.cat([coord, torch.rand(n, 1, generator=gen, dtype=torch.float64)], 1)))
    grid = torch.cat([g for g, _ in clouds])
    feat = torch.cat([f for _, f in clouds])
    return {"coord": feat[:, :3].clone(), "grid_coord": grid, "feat": feat, "offset": torch.tensor([700, 1100])}


def _pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same weights with our behaviour and with upstream's (float64, fixed serialization)."""
    arch = dict(deterministic=True, patch_size=64, dec_depths=(2, 1, 1, 2))  # two blocks in two stages
    ours = _randomised("teacher-demo", **arch).double().eval()
    upstream = from_pointcept(to_pointcept(ours), num_classes=5, preset="teacher-demo", **arch).double().eval()
    return ours, upstream


def _cpe_inputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args[1]))
             for name, m in model.named_modules() if name.endswith("cpe_conv")]
    hooks += [m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, out))
              for name, m in model.named_modules() if name.endswith("proj_skip")]
    hooks += [m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, out.feat))
              for name, m in model.named_modules() if re.fullmatch(r"dec_blocks\.\d+\.0", name)]
    with torch.no_grad():
        logits = model(batch).logits
    for h in hooks:
        h.remove()
    return seen, logits


def test_upstream_behaviour_differs_only_in_the_first_cpe_after_unpooling() -> None:
    ours, upstream = _pair()
    batch = _batch()
    seen_ours, logits_ours = _cpe_inputs(ours, batch)
    seen_up, logits_up = _cpe_inputs(upstream, batch)
    assert not torch.allclose(logits_ours, logits_up)
    first_dec = [f"dec_blocks.{i}.0.cpe_conv" for i in range(4)]
    # Encoder: identical. Coarsest decoder stage: the unpooling's skip branch is identical, and the
    # only different CPE input is its first block's: the sum for us, the skip branch for upstream.
    for name in seen_ours:
        if name.startswith("enc_blocks") or name == "dec_unpool.0.proj_skip":
            assert torch.equal(seen_ours[name], seen_up[name]), name
    assert torch.equal(seen_up["dec_blocks.0.0.cpe_conv"], seen_up["dec_unpool.0.proj_skip"])
    assert not torch.allclose(seen_ours["dec_blocks.0.0.cpe_conv"], seen_up["dec_blocks.0.0.cpe_conv"])
    # Upstream's first block of every decoder stage reads that stage's skip branch; a second block
    # reads the first block's output, as ours does.
    for i in range(4):
        assert torch.equal(seen_up[first_dec[i]], seen_up[f"dec_unpool.{i}.proj_skip"])
    for i in (0, 3):
        for seen in (seen_ours, seen_up):
            assert torch.equal(seen[f"dec_blocks.{i}.1.cpe_conv"], seen[f"dec_blocks.{i}.0"])


def test_both_behaviours_agree_when_the_coarse_branch_adds_nothing() -> None:
    ours, upstream = _pair()
    for model in (ours, upstream):
        with torch.no_grad():
            for unpool in model.dec_unpool:
                unpool.proj[1].weight.zero_()  # BatchNorm scale and shift 0 -> GELU(0) = 0
                unpool.proj[1].bias.zero_()
    batch = _batch()
    assert torch.equal(ours(batch).logits, upstream(batch).logits)


# --- --teacher-checkpoint and the export command ------------------------------------------------

class SchedulerOfAnotherFramework:
    """A pickled object that weights_only loading refuses (as Pointcept's scheduler entry may be)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.write_text, (self.marker, "code ran"))


def test_teacher_checkpoint_accepts_a_pointcept_file_and_skips_refused_entries(tmp_path: Path, capsys) -> None:
    from train.engine.loop import ModelSpec, load_frozen_teacher

    source = _randomised("student-demo")
    marker = tmp_path / "pwned.txt"
    torch.save({"epoch": 50, "state_dict": {"module." + k: v for k, v in to_pointcept(source).items()},
                "optimizer": {"state": {}, "param_groups": []}, "scheduler": SchedulerOfAnotherFramework(marker)},
               tmp_path / "model_best.pth")
    teacher, spec = load_frozen_teacher(tmp_path / "model_best.pth", torch.device("cpu"),
                                        pointcept=ModelSpec("student-demo", 5, {}))
    assert not marker.exists()
    assert "['scheduler']" in capsys.readouterr().err
    assert spec.overrides["upstream_unpool_cpe"] and teacher.config.upstream_unpool_cpe and not teacher.training
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), teacher.state_dict().values()))
    with pytest.raises(ValueError, match="Pointcept checkpoint: pass the preset"):
        load_frozen_teacher(tmp_path / "model_best.pth", torch.device("cpu"))


def test_export_command_writes_pointcepts_layout_and_reimports_exactly(tmp_path: Path, capsys) -> None:
    from train.runtime.checkpoint import save_checkpoint
    from train.export_pointcept import main

    model = _randomised("student-demo")
    spec = {"preset": "student-demo", "num_classes": 5, "overrides": {}}
    save_checkpoint(tmp_path / "model_final.pt", model, None, None, None, 1, 1, {}, {"model_spec": spec})
    assert main([str(tmp_path / "model_final.pt"), str(tmp_path / "out.pth")]) == 0
    printed = capsys.readouterr().out
    assert "DefaultSegmentorV2" in printed and "refreshed CPE input" in printed
    written = torch.load(tmp_path / "out.pth", weights_only=True)
    assert written["state_dict"].keys() == to_pointcept(model).keys()
    back = from_pointcept(written["state_dict"], num_classes=5, preset="student-demo")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    assert main([str(tmp_path / "missing.pt"), str(tmp_path / "x.pth")]) == 2


def test_distillation_runs_from_a_pointcept_teacher_checkpoint(tmp_path: Path) -> None:
    from test_train_support import TINY_MODEL, tiny_config
    from train.runtime.distributed import DistInfo
    from train.runner.stages import run

    torch.manual_seed(0)
    teacher = build_model("teacher-demo", 22, **TINY_MODEL)  # synthetic set: 22 classes
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in to_pointcept(teacher).items()}},
               tmp_path / "model_best.pth")
    cfg = tiny_config(tmp_path, stage="kd", teacher_checkpoint=str(tmp_path / "model_best.pth"))
    (result,) = run(cfg, DistInfo(0, 1, 0, torch.device("cpu"))).values()
    assert 0.0 <= result["miou"] <= 1.0
    assert "kld" in (tmp_path / "out" / "kd" / "train_log.csv").read_text().splitlines()[0]


# --- the architecture from Pointcept's saved config -----------------------------------------------

def _config_text(**backbone_changes: object) -> str:
    """A config as Pointcept saves it (``<experiment>/config.py``): literals and ``dict(...)``."""
    backbone = dict(type="PT-v3m1", in_channels=4, order=["z", "z-trans"], stride=(2, 2),
                    enc_depths=(1, 1, 1), enc_channels=(8, 16, 16), enc_num_head=(1, 1, 2),
                    enc_patch_size=(64, 64, 64), dec_depths=(1, 1), dec_channels=(64, 16), dec_num_head=(2, 1),
                    dec_patch_size=(64, 64), mlp_ratio=4, qkv_bias=True, qk_scale=None, drop_path=0.0,
                    enable_rpe=False, enable_flash=True, pdnorm_bn=False, pdnorm_ln=False)
    backbone.update(backbone_changes)
    args = ", ".join(f"{k}={v!r}" for k, v in backbone.items())
    return ("_base_ = ['../_base_/default_runtime.py']\nbatch_size = 12\n"
            f"model = dict(type='DefaultSegmentorV2', num_classes=5, backbone_out_channels=64,\n"
            f"    backbone=dict({args}),\n    criteria=[dict(type='CrossEntropyLoss', ignore_index=-1)])\n"
            "param_dicts = [dict(keyword='block', lr=0.0002)]\n")


def _experiment(tmp_path: Path, config: str) -> Path:
    from train.models.pointcept import pointcept_overrides, read_model_config

    (tmp_path / "model").mkdir()
    (tmp_path / "config.py").write_text(config)
    model = build_model("student-demo", 5, **pointcept_overrides(read_model_config(tmp_path / "config.py")))
    torch.save({"state_dict": to_pointcept(model)}, tmp_path / "model" / "model_best.pth")
    return tmp_path / "model" / "model_best.pth"


def test_the_architecture_comes_from_the_experiments_config(tmp_path: Path) -> None:
    from train.engine.loop import ModelSpec, load_frozen_teacher

    ckpt = _experiment(tmp_path, _config_text())
    teacher, spec = load_frozen_teacher(ckpt, torch.device("cpu"), pointcept=ModelSpec("teacher", 5, {}))
    cfg = teacher.config
    assert (cfg.enc_channels, cfg.enc_heads, cfg.patch_size, cfg.orders) == ((8, 16, 16), (1, 1, 2), 64, ("z", "z-trans"))
    assert spec.overrides["dec_heads"] == (2, 1) and cfg.upstream_unpool_cpe


@pytest.mark.parametrize("change,message", [
    (dict(enc_patch_size=(64, 64, 128)), r"per-stage patch sizes \[64, 128\]"),
    (dict(enable_rpe=True), "enable_rpe=True"),
    (dict(pdnorm_bn=True), "PDNorm"),
    (dict(type="PT-v3m2"), "only DefaultSegmentorV2 around PT-v3m1"),
])
def test_configs_we_cannot_express_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    from train.models.pointcept import pointcept_overrides, read_model_config

    (tmp_path / "config.py").write_text(_config_text(**change))
    with pytest.raises(ValueError, match=message):
        pointcept_overrides(read_model_config(tmp_path / "config.py"))


def test_a_config_that_is_not_plain_literals_is_refused_without_running_it(tmp_path: Path) -> None:
    from train.models.pointcept import read_model_config

    marker = tmp_path / "ran.txt"
    (tmp_path / "config.py").write_text(f"model = dict(type=open({str(marker)!r}, 'w').write('x'))\n")
    with pytest.raises(ValueError, match="is not plain literals"):
        read_model_config(tmp_path / "config.py")
    assert not marker.exists()


def test_exported_config_reads_back_as_the_same_architecture() -> None:
    from train.models.pointcept import pointcept_overrides

    model = build_model("teacher", 16)
    overrides = pointcept_overrides(pointcept_config(model))
    rebuilt = build_model("student", 16, **overrides)
    assert rebuilt.config == model.config
