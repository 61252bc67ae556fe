"""Run configuration (train/config.py): YAML + CLI precedence and fail-fast validation."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from train.config import SYNTHETIC_DEMO
from train.options.resolve import finalize, resolve, save_config


def test_cli_overrides_config_file_which_overrides_defaults(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("dataset: synthetic\nepochs: 3\nlambda-topo: 4.0\nbatch_size: 5\n")
    cfg = resolve(["--config", str(cfg_file), "--epochs", "7", "--no-topo"])
    assert cfg.dataset == "synthetic"
    assert cfg.epochs == 7  # CLI wins
    assert cfg.lambda_topo == 4.0 and cfg.batch_size == 5  # from the file
    assert cfg.lambda_grad == 1.0 and cfg.lambda_kld == 1.0  # decisions 19 defaults
    assert cfg.topo_m == SYNTHETIC_DEMO["topo_m"]  # synthetic demo budget fills unset options
    # stage all: the flags act on its distilled student
    assert cfg.terms() == {"kld": True, "topo": False, "grad": True}


def test_stage_terms_and_ablation_switches() -> None:
    assert resolve(["--dataset", "synthetic", "--stage", "student"]).terms() == {
        "kld": False, "topo": False, "grad": False}
    cfg = resolve(["--dataset", "synthetic", "--stage", "distill", "--no-grad", "--teacher-checkpoint", __file__])
    assert cfg.terms() == {"kld": True, "topo": True, "grad": False}


def test_saved_config_round_trips(tmp_path: Path) -> None:
    cfg = resolve(["--dataset", "synthetic", "--saliency-layers", "1", "4", "--topo-m", "64"])
    save_config(cfg, tmp_path / "config.yaml")
    again = resolve(["--config", str(tmp_path / "config.yaml")])
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["saliency_layers"] == [1, 4]


@pytest.mark.parametrize(
    "argv, error, match",
    [
        (["--dataset", "synthetic", "--lambda-topo", "-1"], ValueError, "lambda-topo must be a number >= 0"),
        (["--dataset", "synthetic", "--lambda-kld", "-0.5"], ValueError, "lambda-kld"),
        (["--dataset", "synthetic", "--stage", "kd"], ValueError, "--teacher-checkpoint"),
        (["--dataset", "synthetic", "--stage", "distill", "--teacher-checkpoint", "/nonexistent/t.pt"],
         FileNotFoundError, "/nonexistent/t.pt"),
        (["--dataset", "synthetic", "--saliency-layers", "5"], ValueError, "saliency-layers"),
        (["--dataset", "synthetic", "--topo-dims", "2"], ValueError, "topo-dims"),
        (["--dataset", "synthetic", "--epochs", "0"], ValueError, "epochs must be an integer >= 1"),
        (["--stage", "teacher"], ValueError, "no dataset chosen"),
        (["--dataset", "synthetic", "--synthetic-test-fraction", "0.8"], ValueError, "synthetic-test-fraction"),
        (["--dataset", "synthetic", "--topo-time-budget", "-1"], ValueError, "topo-time-budget"),
        (["--dataset", "synthetic", "--topo-time-budget", "inf"], ValueError, "topo-time-budget"),
        (["--dataset", "synthetic", "--max-bad-steps", "0"], ValueError, "max-bad-steps must be an integer >= 1"),
        (["--dataset", "synthetic", "--topo-distance", "sinkhorn", "--sinkhorn-eps", "0"], ValueError,
         "--sinkhorn-eps"),
        (["--dataset", "synthetic", "--topo-workers", "-1"], ValueError, "topo-workers"),
        (["--dataset", "synthetic", "--eval-every-epochs", "-1"], ValueError, "eval-every-epochs must be an integer >= 0"),
        (["--dataset", "synthetic", "--kld-class-weights", "--class-weights", "none"], ValueError,
         "--kld-class-weights.*--class-weights inverse-sqrt"),
        (["--dataset", "synthetic", "--device", "cpu", "--topo-tps", "device"], ValueError,
         "--topo-tps device runs TPS on the GPU"),
    ],
)
def test_bad_configurations_fail_fast_with_a_message_naming_the_option(
    argv: list[str], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        resolve(argv)


def test_topo_distance_and_its_options_reach_the_step_settings() -> None:
    from train.engine.loop import distill_settings

    cfg = resolve(["--dataset", "synthetic", "--topo-distance", "sinkhorn", "--sinkhorn-eps", "0.05",
                   "--pi-norm", "l1", "--no-plots"])
    s = distill_settings(cfg, "distill")
    assert (s.topo_distance, s.sinkhorn_eps, s.pi_norm, cfg.plots) == ("sinkhorn", 0.05, "l1", False)
    with pytest.raises(SystemExit):
        resolve(["--dataset", "synthetic", "--topo-distance", "wasserstein"])


def test_saliency_range_and_kld_class_weight_flags_reach_the_step_settings() -> None:
    from train.engine.loop import distill_settings

    default = distill_settings(resolve(["--dataset", "synthetic"]), "distill")
    assert (default.saliency_detach_range, default.kld_class_weights) == (False, False)  # decisions 43, 44
    s = distill_settings(resolve(["--dataset", "synthetic", "--saliency-detach-range", "--kld-class-weights"]),
                         "distill")
    assert (s.saliency_detach_range, s.kld_class_weights) == (True, True)


def test_topo_tps_reaches_the_step_settings_and_names_the_loss_places() -> None:
    from fast.topo_loss import TPS_PLACES
    from train.config import TOPO_TPS
    from train.engine.loop import distill_settings

    assert TOPO_TPS == ("auto", *TPS_PLACES)  # auto: train.engine.steps picks one of the loss's places
    assert distill_settings(resolve(["--dataset", "synthetic"]), "distill").topo_tps == "auto"  # decision 42
    assert resolve(["--dataset", "synthetic", "--device", "cpu", "--topo-tps", "auto"]).topo_tps == "auto"


def test_unknown_dataset_fails_on_the_command_line_and_in_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        resolve(["--dataset", "kitti360"])
    f = tmp_path / "c.yaml"
    f.write_text("dataset: kitti360\n")
    with pytest.raises(ValueError, match="unknown dataset 'kitti360'"):
        resolve(["--config", str(f)])
    f.write_text("dataset: synthetic\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="--seg-loss must be one of"):
        finalize({"dataset": "synthetic", "seg_loss": "dice"})
    with pytest.raises(ValueError, match="--class-weights must be one of"):
        finalize({"dataset": "synthetic", "class_weights": "inverse"})
    # plain CE on real data (the paper); the synthetic CPU demo weights classes unless told not to
    assert finalize({"dataset": "waymo"}).class_weights == "none"
    assert finalize({"dataset": "synthetic"}).class_weights == "inverse-sqrt"
    assert finalize({"dataset": "synthetic", "class_weights": "none"}).class_weights == "none"
    with pytest.raises(ValueError, match="unknown option 'learning_rate'"):
        resolve(["--config", str(f)])


def test_help_documents_every_option_settable_on_the_command_line() -> None:
    from train.config import RunConfig
    from train.options.resolve import build_parser

    text = build_parser().format_help()
    config_file_only = {"teacher_overrides", "student_overrides"}
    for name in RunConfig.__dataclass_fields__:
        if name not in config_file_only:
            assert "--" + name.replace("_", "-") in text, name


def test_every_option_belongs_to_a_help_section_and_shows_its_default() -> None:
    """A new RunConfig field needs an entry in config.GROUP_OF (its --help section) and in config.HELP;
    every flag's help ends with its default (the synthetic demo's and the paper's where they differ)."""
    from train.config import GROUP_OF, GROUPS, HELP, RunConfig, default_text
    from train.options.resolve import build_parser

    fields = set(RunConfig.__dataclass_fields__)
    assert set(GROUP_OF) == fields and set(HELP) == fields
    assert set(GROUP_OF.values()) == set(GROUPS)
    sections = {g.title: g for g in build_parser()._action_groups}
    for name in fields - {"teacher_overrides", "student_overrides"}:
        flag = "--" + name.replace("_", "-")
        (action,) = [a for g in sections.values() for a in g._group_actions if flag in a.option_strings]
        assert action in sections[GROUP_OF[name]]._group_actions, name
        assert action.help.endswith(f"(default: {default_text(name)})") and default_text(name), name
    assert default_text("epochs") == "50; synthetic CPU demo: 14"
    assert default_text("seg_loss") == "ce+lovasz; paper: ce"
    text = build_parser().format_help()
    assert "decisions 6c" not in text and "docs/decisions.md decision 6c" in text
    assert "what --out holds after a run" in text and "model_final.pt" in text


def test_help_and_malformed_flags_are_answered_before_torch_is_imported() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    for argv, code in ((["--help"], 0), (["--stage", "nope"], 2)):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "train.run", *argv], cwd=root,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == code, result.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
        assert not {m for m in imported if m.split(".")[0] in ("torch", "scipy", "fast")}
    assert [line for line in result.stderr.splitlines() if "|" not in line] == [
        "python -m train.run: error: argument --stage: invalid choice: 'nope' (choose from 'teacher', 'student', "
        "'kd', 'distill', 'all') (see --help)"]


def test_a_config_file_reads_numbers_without_a_dot_and_none_as_the_command_line_does(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads 2e-3 and none as strings
    f = tmp_path / "c.yaml"
    f.write_text("dataset: synthetic\nlr: 2e-3\npct_start: 4e-2\ngrad_clip: 1e1\nsaliency_eps: 1e-8\n"
                 "epochs: 3e0\ntopo_time_budget: none\npreempt_signal: none\n")
    cfg = resolve(["--config", str(f)])
    assert (cfg.lr, cfg.pct_start, cfg.grad_clip, cfg.saliency_eps, cfg.epochs) == (2e-3, 4e-2, 10.0, 1e-8, 3)
    assert all(type(v) is float for v in (cfg.lr, cfg.pct_start, cfg.grad_clip, cfg.saliency_eps))
    assert cfg.topo_time_budget is None and cfg.preempt_signal == ["none"]
    for line, message in (("lr: fast", "lr must be a number, got 'fast'"),
                          ("epochs: 2.5e0", r"epochs must be an integer \(or none\), got '2.5e0'"),
                          ("lr: none", "lr must be a number, got 'none'")):
        f.write_text(f"dataset: synthetic\n{line}\n")
        with pytest.raises(ValueError, match=message):
            resolve(["--config", str(f)])
