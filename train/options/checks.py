"""The checks of a resolved ``python -m train.run`` configuration (:func:`validate`): each option's
value against the option table (:mod:`train.config`), in a fixed order, refused in one line that
names the option and the fix; no work is done and no input file is read but the teacher checkpoint's
existence (the inputs themselves: :mod:`train.runner.preflight`).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from reference.topo_loss import check_distance
from train.config import (CONV_BACKENDS, DATASETS, DECODER_STAGES, MIXED_STAGES, PREEMPT_SIGNALS, STAGES,
                          SYNTHETIC_CAMERAS, SYNTHETIC_VARIANTS, TEACHERS, TOPO_NORMALIZE, TOPO_TPS, UNLABELLED_SPLITS,
                          RunConfig)
from train.option_names import CLASS_WEIGHTINGS, NUSCENES_VERSIONS, SEG_LOSSES
from train.options.defaults import runs_on_cuda


def validate(cfg: RunConfig) -> None:
    """Raise ValueError / FileNotFoundError naming the option and the fix; does no work. The checks
    run in this order, so a configuration with several faults is refused for the first."""
    _check_data(cfg)
    _check_counts(cfg)
    _check_unlabelled(cfg)
    _check_processes(cfg)
    _check_checkpoints_and_logs(cfg)
    _check_rates_and_fractions(cfg)
    _check_persistence(cfg)
    _check_choices(cfg)
    _check_distillation_terms(cfg)
    _check_teacher(cfg)
    _check_pseudo_labels(cfg)
    _check_device_and_models(cfg)


def _check_data(cfg: RunConfig) -> None:
    """The data set, the stage and the nuScenes release."""
    if cfg.dataset is None:
        raise ValueError("no dataset chosen: pass --dataset {" + ",".join(DATASETS) + "} (or 'dataset:' in --config)")
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
    if cfg.stage not in STAGES:
        raise ValueError(f"unknown stage {cfg.stage!r}; choose one of {', '.join(STAGES)}")
    if cfg.nuscenes_version not in NUSCENES_VERSIONS:
        raise ValueError(f"--nuscenes-version must be one of {', '.join(NUSCENES_VERSIONS)}, got "
                         f"{cfg.nuscenes_version!r}")
    if cfg.dataset == "nuscenes" and cfg.nuscenes_version == "v1.0-test":
        raise ValueError("--nuscenes-version v1.0-test holds only the unlabelled test scenes: a run "
                         "trains on labelled scans and scores on labelled validation scans; use "
                         "v1.0-trainval (or v1.0-mini to try things) and label the test scenes with "
                         "python -m train.predict --nuscenes-version v1.0-test --split test --format nuscenes")


def _check_counts(cfg: RunConfig) -> None:
    """The loss weights (>= 0) and the counts (>= 1) of epochs, steps, scans and processes."""
    for name in ("lambda_kld", "lambda_topo", "lambda_grad"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or v < 0 or v != v:
            raise ValueError(f"--{name.replace('_', '-')} must be a number >= 0, got {v!r}")
    positive = ("epochs", "teacher_epochs", "batch_size", "topo_m", "latency_runs", "synthetic_scenes", "procs",
                "max_bad_steps")
    for name in positive:
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
    for name in ("iters_per_epoch", "eval_max_scans", "synthetic_beams", "synthetic_azimuth_steps"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"--{name.replace('_', '-')} must be an integer >= 1, got {v!r}")


def _check_unlabelled(cfg: RunConfig) -> None:
    """``--unlabelled-split``: a split of the dataset's that holds other scans than its labelled ones,
    a stage that distils (decision 57), a ratio > 0; the synthetic set's split needs its size."""
    scenes = cfg.synthetic_unlabelled_scenes
    if isinstance(scenes, bool) or not isinstance(scenes, int) or scenes < 0:
        raise ValueError(f"--synthetic-unlabelled-scenes must be an integer >= 0, got {scenes!r}")
    ratio = cfg.unlabelled_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio < float("inf"):
        raise ValueError(f"--unlabelled-ratio must be a number > 0 (unlabelled scans per labelled one), got {ratio!r}")
    name = cfg.unlabelled_split
    if name is None:
        return
    if name not in UNLABELLED_SPLITS[cfg.dataset]:
        raise ValueError(f"--unlabelled-split {name}: {cfg.dataset} has no unlabelled split of that name; its "
                         f"unlabelled split is {' or '.join(UNLABELLED_SPLITS[cfg.dataset])} (the training, validation "
                         "and test splits hold labelled scans)")
    if not _distilling(cfg):
        raise ValueError(f"--unlabelled-split trains the kd and distill stages on scans without labels, from the "
                         f"teacher's outputs alone; --stage {cfg.stage} with these terms reads no teacher: use --stage "
                         "kd, distill or all")
    if cfg.dataset == "synthetic" and scenes == 0:
        raise ValueError("--unlabelled-split unlabelled names no scans of the synthetic set: generate them with "
                         "--synthetic-unlabelled-scenes N")


def _distilling(cfg: RunConfig) -> list[str]:
    """The stages of the run that read a teacher (a kd or distill stage with a teacher term on, or
    with the camera's pseudo-labels, decision 65)."""
    return [s for s in cfg.stages()
            if s in MIXED_STAGES and (cfg.camera_pseudo_labels or any(cfg.stage_terms(s).values()))]


def _check_teacher(cfg: RunConfig) -> None:
    """``--teacher`` and ``--image-predictions``: the camera teacher (decision 61) needs the folder,
    a stage that distils, no teacher network and no saliency term."""
    if cfg.teacher not in TEACHERS:
        raise ValueError(f"--teacher must be one of {TEACHERS}, got {cfg.teacher!r}")
    if cfg.teacher != "images":
        if cfg.image_predictions is not None:
            raise ValueError("--image-predictions is the camera teacher's folder: pass --teacher images with it")
        return
    if cfg.image_predictions is None:
        raise ValueError("--teacher images distils from a 2D model's projected predictions: pass --image-predictions "
                         "FOLDER (written by python -m train.image_labels --probs)")
    if cfg.stage == "teacher":
        raise ValueError("--stage teacher trains a PTv3 teacher, which --teacher images does not use (the camera "
                         "predictions are the teacher): use --stage kd, distill or all")
    if cfg.teacher_checkpoint is not None:
        raise ValueError("--teacher-checkpoint is not read with --teacher images (the camera predictions are the "
                         "teacher): leave it out, or use --teacher ptv3")
    if not _distilling(cfg):
        raise ValueError(f"--teacher images teaches the kd and distill stages; --stage {cfg.stage} with these terms "
                         "reads no teacher: use --stage kd, distill or all")
    grad = [s for s in cfg.stages() if s in MIXED_STAGES and cfg.stage_terms(s)["grad"]]
    if grad:
        raise ValueError(f"--teacher images with --lambda-grad {cfg.lambda_grad:g} (stage {grad[0]}): the saliency "
                         "term aligns the student's activation gradients with the teacher network's (paper Eq. 4-7), "
                         "and projected camera predictions have no such gradients; pass --lambda-grad 0 or --no-grad "
                         "(docs/decisions.md decision 61)")


def check_pseudo_label_threshold(threshold: object) -> None:
    """``--pseudo-label-threshold`` (decision 65): a probability in [0, 1]; the one check of its
    value, which ``train.study`` makes too before any unit starts."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"--pseudo-label-threshold must be a number in [0, 1] (the camera's top probability a "
                         f"pseudo-label needs), got {threshold!r}")


def _check_pseudo_labels(cfg: RunConfig) -> None:
    """``--camera-pseudo-labels`` (decision 65): the camera teacher's classes label the scans of the
    unlabelled split, so it needs both; ``--pseudo-label-threshold`` a probability in [0, 1], read
    with it only."""
    threshold = cfg.pseudo_label_threshold
    check_pseudo_label_threshold(threshold)
    if not cfg.camera_pseudo_labels:
        if threshold:
            raise ValueError("--pseudo-label-threshold is read with --camera-pseudo-labels only: pass it too, or "
                             "leave the threshold out")
        return
    if cfg.teacher != "images":
        raise ValueError("--camera-pseudo-labels trains L_seg on the camera teacher's classes: pass --teacher images "
                         "--image-predictions FOLDER (written by python -m train.image_labels --probs)")
    if cfg.unlabelled_split is None:
        raise ValueError("--camera-pseudo-labels labels the scans of the unlabelled split (the labelled scans keep "
                         "their own labels): pass --unlabelled-split NAME")


def _check_processes(cfg: RunConfig) -> None:
    """The processes: ``--procs`` not under torchrun, the batch shared out evenly over them."""
    from train.runtime.distributed import under_external_launcher

    if cfg.procs > 1 and under_external_launcher():
        raise ValueError("--procs starts its own processes: under torchrun leave it unset (or 1)")
    if cfg.batch_size % cfg.procs:
        raise ValueError(f"--batch-size {cfg.batch_size} is the total over --procs {cfg.procs} processes and "
                         "must be divisible by it")


def _check_checkpoints_and_logs(cfg: RunConfig) -> None:
    """How often the run checkpoints, logs and validates, and the signals that preempt it."""
    if cfg.checkpoint_every < 0 or cfg.num_workers < 0 or cfg.log_term_grads < 0:
        raise ValueError("--checkpoint-every, --num-workers and --log-term-grads must be >= 0")
    for name in ("checkpoint_minutes", "progress_steps", "progress_seconds"):
        v = getattr(cfg, name)
        kind = int if name == "progress_steps" else (int, float)
        if isinstance(v, bool) or not isinstance(v, kind) or not v >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a number >= 0, got {v!r}")
    signals = cfg.preempt_signal
    if not isinstance(signals, list) or not signals or not (
            signals == ["none"] or all(s in PREEMPT_SIGNALS for s in signals)):
        raise ValueError(f"--preempt-signal takes names from {', '.join(PREEMPT_SIGNALS)}, or none alone, "
                         f"got {signals!r}")
    every = cfg.eval_every_epochs
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ValueError(f"--eval-every-epochs must be an integer >= 0 (0: evaluate only after training), "
                         f"got {every!r}")


def _check_rates_and_fractions(cfg: RunConfig) -> None:
    """The optimiser's rates, the grid, the synthetic splits, the warm-up and the clipping."""
    for name in ("lr", "weight_decay", "block_lr_scale", "div_factor", "final_div_factor", "kld_temperature"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or v < 0 or (name != "weight_decay" and v == 0):
            raise ValueError(f"--{name.replace('_', '-')} must be > 0 (weight decay >= 0), got {v!r}")
    if not isinstance(cfg.grid_size, (int, float)) or cfg.grid_size <= 0:
        raise ValueError(f"--grid-size must be > 0 metres, got {cfg.grid_size!r}")
    if not 0.0 < cfg.synthetic_val_fraction < 1.0:
        raise ValueError(f"--synthetic-val-fraction must lie in (0, 1), got {cfg.synthetic_val_fraction!r}")
    if not 0.0 <= cfg.synthetic_test_fraction < 1.0 - cfg.synthetic_val_fraction:
        raise ValueError(f"--synthetic-test-fraction must lie in [0, 1 - val fraction), got "
                         f"{cfg.synthetic_test_fraction!r}")
    if not 0.0 < cfg.pct_start < 1.0:
        raise ValueError(f"--pct-start must lie in (0, 1), got {cfg.pct_start!r}")
    if cfg.grad_clip is not None and cfg.grad_clip <= 0:
        raise ValueError(f"--grad-clip must be > 0 when given, got {cfg.grad_clip!r}")


def _check_persistence(cfg: RunConfig) -> None:
    """The time budget and worker count of the persistence computation (:mod:`fast.persistence`)."""
    from fast.persistence import check_time_budget, check_worker_count

    check_time_budget(cfg.topo_time_budget)
    check_worker_count(cfg.topo_workers)


def _check_choices(cfg: RunConfig) -> None:
    """The options that name one of a fixed set of choices."""
    if cfg.class_weights not in CLASS_WEIGHTINGS:
        raise ValueError(f"--class-weights must be one of {CLASS_WEIGHTINGS}, got {cfg.class_weights!r}")
    if cfg.conv_backend not in CONV_BACKENDS:
        raise ValueError(f"--conv-backend must be one of {CONV_BACKENDS}, got {cfg.conv_backend!r}")
    if cfg.seg_loss not in SEG_LOSSES:
        raise ValueError(f"--seg-loss must be one of {SEG_LOSSES}, got {cfg.seg_loss!r}")
    if cfg.synthetic_variant not in SYNTHETIC_VARIANTS:
        raise ValueError(f"--synthetic-variant must be one of {SYNTHETIC_VARIANTS}, got {cfg.synthetic_variant!r}")
    if cfg.synthetic_cameras not in SYNTHETIC_CAMERAS:
        raise ValueError(f"--synthetic-cameras must be one of {SYNTHETIC_CAMERAS}, got {cfg.synthetic_cameras!r}")


def _check_distillation_terms(cfg: RunConfig) -> None:
    """Where TPS runs, the normalisation, dimensions and distance of L_topo, the layers of L_grad
    and the class weights of L_kld."""
    if cfg.topo_tps not in TOPO_TPS:
        raise ValueError(f"--topo-tps must be one of {TOPO_TPS}, got {cfg.topo_tps!r}")
    if cfg.topo_tps == "device" and not runs_on_cuda(cfg):
        raise ValueError("--topo-tps device runs TPS on the GPU, and this run trains on the CPU; use --topo-tps host")
    if cfg.topo_tps == "device" and importlib.util.find_spec("triton") is None:
        raise ValueError("--topo-tps device runs a Triton kernel, and Triton is not installed (it comes with CUDA "
                         "builds of torch); use --topo-tps host")
    if cfg.topo_normalize not in TOPO_NORMALIZE:
        raise ValueError(f"--topo-normalize must be one of {TOPO_NORMALIZE}, got {cfg.topo_normalize!r}")
    if not cfg.topo_dims or any(d not in (0, 1) for d in cfg.topo_dims) or len(set(cfg.topo_dims)) != len(cfg.topo_dims):
        raise ValueError(f"--topo-dims must be distinct values from {{0, 1}}, got {cfg.topo_dims!r}")
    try:
        check_distance(cfg.topo_distance, cfg.sinkhorn_eps, cfg.pi_norm)
    except ValueError as err:
        raise ValueError(f"--topo-distance / --sinkhorn-eps / --pi-norm: {err}") from None
    if not cfg.saliency_layers or any(s not in DECODER_STAGES for s in cfg.saliency_layers) or len(
        set(cfg.saliency_layers)
    ) != len(cfg.saliency_layers):
        raise ValueError(
            f"--saliency-layers must be distinct decoder stages from {DECODER_STAGES}, got {cfg.saliency_layers!r}"
        )
    if cfg.kld_class_weights and cfg.class_weights == "none":
        raise ValueError("--kld-class-weights weights the KL by the cross-entropy's class weights: pass "
                         "--class-weights inverse-sqrt as well (the synthetic demo's default)")


def _check_device_and_models(cfg: RunConfig) -> None:
    """The device, the model overrides and, for a stage that distills, the teacher checkpoint."""
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {cfg.device!r}")
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    for name in ("teacher_overrides", "student_overrides"):
        if not isinstance(getattr(cfg, name), dict):
            raise ValueError(f"{name} must be a mapping of model option: value in the config file")
    if cfg.stage in ("kd", "distill") and cfg.teacher == "ptv3":
        terms = cfg.terms()
        if any(terms.values()):
            if cfg.teacher_checkpoint is None:
                raise ValueError(
                    f"--stage {cfg.stage} distills from a trained teacher: pass --teacher-checkpoint FILE "
                    "(written by --stage teacher as <out>/teacher/model_final.pt) or use --stage all"
                )
            if not Path(cfg.teacher_checkpoint).is_file():
                raise FileNotFoundError(
                    f"teacher checkpoint {cfg.teacher_checkpoint} does not exist; train one with "
                    "--stage teacher (it writes <out>/teacher/model_final.pt) and pass it to --teacher-checkpoint"
                )
