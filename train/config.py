"""The option table of ``python -m train.run``: every option, its default, help text, section and choices.

Every option is a field of :class:`RunConfig`. It can be set in a small YAML file (``--config``,
keys are the field names, dashes or underscores) and on the command line; the command line wins.
Reading them (the parser, the YAML file, the defaults that depend on the data set and the machine)
is :mod:`train.options.resolve`; :func:`train.options.checks.validate` checks the resolved
configuration before any work starts (unknown dataset, negative loss weights, a missing teacher
checkpoint, ...) so a bad run fails in a second, not after an epoch.

Defaults follow the paper's training protocol (App. C.2: AdamW lr 0.002, weight decay 0.005,
OneCycleLR, 50 epochs, batch 12) and the PTv3 recipe of ``docs/ptv3-and-datasets.md`` section D;
loss weights follow decisions 19 (paper Table 7 best). ``--dataset synthetic`` switches the
unset budget options to a CPU demo budget (see :data:`SYNTHETIC_DEMO`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Only light imports here (numpy at most): ``--help`` is printed before torch, fast and scipy load
# (decision 38).
from reference.persistence_image import DEFAULT_PI_NORM, PI_NORMS
from reference.sinkhorn import DEFAULT_SINKHORN_EPS
from reference.topo_loss import DEFAULT_M, DISTANCES
from train.option_names import (CLASS_WEIGHTINGS, DEFAULT_NUSCENES_VERSION, DEFAULT_SEG_LOSS, NUSCENES_VERSIONS,
                                SEG_LOSSES)

DATASETS: tuple[str, ...] = ("waymo", "nuscenes", "semantic_kitti", "synthetic", "folder")
STAGE_ORDER: tuple[str, ...] = ("teacher", "student", "kd", "distill")  # the order --stage all runs them
STAGES: tuple[str, ...] = (*STAGE_ORDER, "all")
STUDENT_STAGES: tuple[str, ...] = ("student", "kd", "distill")
# --teacher: the PTv3 teacher network, or the camera predictions projected onto the points (decision 61)
TEACHERS: tuple[str, ...] = ("ptv3", "images")
MIXED_STAGES: tuple[str, ...] = ("kd", "distill")  # the stages --unlabelled-split mixes its scans into
# The splits of each dataset that --unlabelled-split can name (decision 57): read without labels, none
# of their scans in the training, validation or test split (train.runner.datasets checks the scans).
UNLABELLED_SPLITS: dict[str, tuple[str, ...]] = {
    "waymo": ("unlabelled",),  # training frames without segmentation labels (train.data.lidar.waymo_convert)
    "synthetic": ("unlabelled",),  # --synthetic-unlabelled-scenes
    "nuscenes": ("sweeps",),  # the non-keyframe LIDAR_TOP sweeps of the training scenes
    "semantic_kitti": ("test",),  # sequences 11-21
    "folder": ("unlabelled",),  # splits.unlabelled of dataset.yaml
}
TOPO_NORMALIZE: tuple[str, ...] = ("scale", "l2", "none")
DECODER_STAGES: tuple[int, ...] = (1, 2, 3, 4)
CONV_BACKENDS: tuple[str, ...] = ("auto", "torch", "spconv")  # train.models.sparse_conv.SubMConv3d
# "auto" (fast.tps.auto_tps_place) or one of fast.topo_loss.TPS_PLACES, named here without importing torch
TOPO_TPS: tuple[str, ...] = ("auto", "host", "device")
PREEMPT_SIGNALS: tuple[str, ...] = ("TERM", "USR1", "USR2", "INT", "HUP")  # --preempt-signal (train.runtime.preemption)
SYNTHETIC_VARIANTS: tuple[str, ...] = ("demo", "fine")  # train.data.synthetic.scene.STYLES (a test checks)
SYNTHETIC_CAMERAS: tuple[str, ...] = ("none", "ring")  # "none" and train.data.synthetic.camera_rig.RIGS (a test checks)

# Loss terms each stage switches on (paper Table 5 rows); ablation flags override them.
STAGE_TERMS: dict[str, dict[str, bool]] = {
    "teacher": {"kld": False, "topo": False, "grad": False},
    "student": {"kld": False, "topo": False, "grad": False},
    "kd": {"kld": True, "topo": False, "grad": False},
    "distill": {"kld": True, "topo": True, "grad": True},
}

# Budget of the synthetic CPU demo (the README's main command), used for every option the user
# left unset. Chosen by measurement on this 2-core CPU (teacher-demo, batch 2, mIoU on the 20
# validation scenes of the 100-scene set, 22 classes present):
# - class_weights inverse-sqrt: at 810 steps the plain-CE teacher reached 41.7 (45.3 on its own
#   training scenes: under-fitted, not over-fitted; bus 25, lane marker 6, cone 0 even there); with
#   f_c^-1/2 class weights 49.6 (lane marker 46 vs 4, sign 76 vs 47, other ground 38 vs 18, cone
#   16 vs 0; road, building and car unchanged). Without drop-path 50.0 vs 49.6: no gain, kept.
# - steps (2026-11-23; benchmarks/STUDY.md, section 2.1): every student row gets the same 14 epochs
#   (420 steps): there the validation curves are flat under the OneCycle schedule (last two passes
#   CE 33.5, 33.3; KD 31.2, 31.3; full 30.3, 30.6), while at 12 epochs CE and KD still moved by
#   0.93 and 0.94 between their last two passes and at 10 (the former budget) CE by 1.5. The whole
#   command must stay within 20 minutes here, so the teacher gets 8 epochs (240 steps): measured in
#   the training loop with 2 ranks, a teacher step costs 0.83 s, CE 0.36 s, KD 0.55 s, the full
#   objective 0.86 s (plus about 29 s of first-use compilation of the persistence kernels in a fresh
#   clone), and 12 teacher epochs with 14 student epochs took 21.1 min. The teacher is the price:
#   36.2 validation mIoU after 8 epochs (38.9 after 12, 51.8-57.4 after the former 32). With this
#   budget the command took 18.0 min on a fresh clone of b8a188c (teacher 36.2; students 33.3, 30.1, 29.9;
#   later commits and machines: benchmarks/STUDY.md section 2.6).
# - block_lr_scale: the PTv3 recipe trains the transformer blocks (most of the parameters) at 1/10
#   of the base lr; over 600 steps that is too slow: 1.0 gave 39.9 vs 37.6 (bicycle 36 vs 6,
#   pedestrian 48 vs 37). A higher base lr (0.01, blocks 1.0) was worse: 26.4 vs 32.9 at 300 steps.
# - grid 0.25 m: 5.8k of the 8.8k points of a scan stay (0.1 m keeps 7.8k); 0.1 m reached 33.1 vs
#   37.6 at 600 steps, so the finer grid costs more than it gives at this budget. No drop-path and
#   patch 128 instead of 256: 36.6 vs 37.6, no gain.
# - procs 2: two single-thread DDP ranks (1 scan each) instead of one process, whose second OpenMP
#   thread adds almost nothing to these small kernels: 0.53 s per teacher step of 2 scans on an
#   idle machine (0.78 s with another training process sharing it), where one process took
#   1.1-1.45 s under similar load.
# - 100 scenes of a 32-beam x 300-azimuth scan: 60 train / 20 validation / 20 test (whole scenes).
# - topo_m = 256: exact H1 of one 1024-point cloud takes ~0.45 s on one core, and a step needs it
#   for 2 clouds x 2 models on the same 2 cores that run the networks (distillation step measured
#   at M=256: 1.13 s with the persistence overlapped, 3 ms waiting for it; 1.77 s at M=1024).
# The whole demo (data generation, four models, evaluation, latency): see the README's set-up
# section for its time and results at this budget.
SYNTHETIC_DEMO: dict[str, Any] = {
    "epochs": 14,
    "teacher_epochs": 8,
    "batch_size": 2,
    "topo_m": 256,
    "grid_size": 0.25,
    "block_lr_scale": 1.0,
    "class_weights": "inverse-sqrt",
    "synthetic_scenes": 100,
    "synthetic_azimuth_steps": 300,
    # each term's share of the gradient, drawn in curves.png (21 points over a 420-step student)
    "log_term_grads": 20,
}


@dataclass
class RunConfig:
    """Everything a run needs; see ``python -m train.run --help`` for each field's meaning."""

    dataset: str | None = None
    data_root: str | None = None
    nuscenes_version: str = DEFAULT_NUSCENES_VERSION
    stage: str = "all"
    out: str | None = None
    epochs: int | None = None
    teacher_epochs: int | None = None
    batch_size: int | None = None
    iters_per_epoch: int | None = None
    num_workers: int | None = None
    skip_bad_scans: bool = False
    unlabelled_split: str | None = None
    unlabelled_ratio: float = 1.0
    procs: int | None = None
    seed: int = 0
    device: str = "auto"
    deterministic: bool = False
    amp: bool = True
    # optimisation (spec D)
    lr: float = 0.002
    weight_decay: float = 0.005
    block_lr_scale: float | None = None
    block_keyword: str = "block"
    pct_start: float = 0.04
    div_factor: float = 10.0
    final_div_factor: float = 100.0
    grad_clip: float | None = None
    max_bad_steps: int = 10
    # models
    teacher_preset: str = "auto"
    student_preset: str = "auto"
    teacher_overrides: dict[str, Any] = field(default_factory=dict)
    student_overrides: dict[str, Any] = field(default_factory=dict)
    conv_backend: str = "auto"
    teacher_checkpoint: str | None = None
    teacher: str = "ptv3"
    image_predictions: str | None = None
    camera_pseudo_labels: bool = False
    pseudo_label_threshold: float = 0.0
    seg_loss: str = DEFAULT_SEG_LOSS
    class_weights: str | None = None
    # distillation terms (decisions 12-19)
    kld: bool | None = None
    topo: bool | None = None
    grad: bool | None = None
    lambda_kld: float = 1.0
    lambda_topo: float = 8.0
    lambda_grad: float = 1.0
    kld_temperature: float = 1.0
    topo_m: int | None = None
    topo_normalize: str = "scale"
    topo_time_budget: float | None = 5.0
    topo_workers: int | None = None
    topo_tps: str = "auto"
    topo_dims: list[int] = field(default_factory=lambda: [0, 1])
    topo_distance: str = "pwcd"
    sinkhorn_eps: float = DEFAULT_SINKHORN_EPS
    pi_norm: str = DEFAULT_PI_NORM
    saliency_layers: list[int] = field(default_factory=lambda: list(DECODER_STAGES))
    saliency_eps: float = 1e-8
    saliency_detach_range: bool = False
    kld_class_weights: bool = False
    # evaluation, logging, checkpoints
    tta: bool = False
    eval_max_scans: int | None = None
    eval_every_epochs: int = 2
    latency_runs: int = 10
    checkpoint_every: int = 0
    checkpoint_minutes: float | None = None
    preempt_signal: list[str] = field(default_factory=lambda: ["TERM", "USR1"])
    resume: bool = False
    profile: bool = False
    log_term_grads: int | None = None
    tensorboard: bool = True
    plots: bool = True
    progress: bool = True
    progress_steps: int = 0
    progress_seconds: float = 30.0
    grid_size: float | None = None
    # synthetic data (train.data.synthetic)
    synthetic_scenes: int | None = None
    synthetic_val_fraction: float = 0.2
    synthetic_test_fraction: float = 0.2
    synthetic_seed: int = 0
    synthetic_beams: int | None = None
    synthetic_azimuth_steps: int | None = None
    synthetic_variant: str = "demo"
    synthetic_unlabelled_scenes: int = 0
    synthetic_cameras: str = "none"

    def terms(self) -> dict[str, bool]:
        """The loss terms switched on: the stage's defaults, overridden by the ablation flags."""
        base = dict(STAGE_TERMS.get(self.stage, STAGE_TERMS["distill"]))
        for name in ("kld", "topo", "grad"):
            flag = getattr(self, name)
            if flag is not None:
                base[name] = bool(flag)
        return base

    def stage_terms(self, stage: str) -> dict[str, bool]:
        """The loss terms ``stage`` computes: switched on (:meth:`terms` of that stage) with a weight > 0."""
        on = RunConfig(**{**self.to_dict(), "stage": stage}).terms()
        return {term: flag and getattr(self, f"lambda_{term}") > 0 for term, flag in on.items()}

    def stages(self) -> tuple[str, ...]:
        """The stages the run trains, in order: ``--stage``, or for ``all`` every stage of
        :data:`STAGE_ORDER` but the teacher's when the teacher is the cameras' (decision 61)."""
        if self.stage != "all":
            return (self.stage,)
        return tuple(s for s in STAGE_ORDER if not (s == "teacher" and self.teacher == "images"))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Every option by name (the parser, the --config reader and default_text read it).
FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}

HELP: dict[str, str] = {
    "dataset": "which dataset: " + ", ".join(DATASETS) + " (folder: your own scans with a dataset.yaml, "
    "docs/own-data.md)",
    "data_root": "dataset root directory (the synthetic set is generated there when absent)",
    "nuscenes_version": "nuScenes tables <data-root>/<version>/ and their official splits: "
    "v1.0-trainval (train/val), v1.0-mini (mini_train/mini_val); v1.0-test is unlabelled and "
    "cannot train or score a run",
    "stage": "teacher | student (CE+Lovasz) | kd (+KLD) | distill (+topo +grad) | all",
    "out": "output directory (its contents: see the end of this help)",
    "epochs": "student epochs (paper: 50)",
    "teacher_epochs": "teacher epochs",
    "batch_size": "total batch size over all processes (paper: 12)",
    "iters_per_epoch": "cap on iterations per epoch",
    "num_workers": "DataLoader worker processes per process (on CUDA: the node's CPU cores shared out over its "
                   "ranks, one kept for the training process, 1 to 8; docs/decisions.md decision 39)",
    "skip_bad_scans": "train on when a training scan cannot be read (truncated file, wrong point count, NaN): "
    "warn naming it, fill its slot with the next readable scan, count it in the log (off: stop with the error)",
    "unlabelled_split": "a split read without labels (none needs to exist) and mixed into the kd and distill "
    "stages' training batches: L_seg skips its scans, L_kld and L_topo are as on labelled scans, L_grad's task loss "
    "takes the teacher's most likely class as its target (docs/decisions.md decision 57); synthetic: unlabelled "
    "(--synthetic-unlabelled-scenes), semantic_kitti: test (sequences 11-21), nuscenes: sweeps (the non-keyframe "
    "sweeps of the training scenes), waymo: unlabelled (training frames without labels), folder: unlabelled "
    "(splits.unlabelled in dataset.yaml)",
    "unlabelled_ratio": "unlabelled scans per labelled one in every training list of --unlabelled-split (an epoch "
    "is one pass over the labelled scans plus this many times as many unlabelled ones)",
    "procs": "training processes started on this machine (DDP; 2 for the synthetic demo on a CPU "
    "with >= 2 cores and an even batch, else 1; under torchrun leave it unset; --resume with another number "
    "than the checkpoint's continues re-sharded, docs/decisions.md decision 46)",
    "seed": "random seed of data order, augmentation and initialisation",
    "device": "auto | cpu | cuda",
    "deterministic": "deterministic algorithms (bitwise-reproducible CPU runs, used by tests)",
    "amp": "mixed precision on CUDA (never on CPU)",
    "lr": "AdamW peak learning rate (paper App. C.2)",
    "weight_decay": "AdamW weight decay (paper App. C.2)",
    "block_lr_scale": "learning-rate factor of transformer-block parameters (PTv3 recipe, "
    "docs/ptv3-and-datasets.md spec D)",
    "block_keyword": "parameter-name substring that marks transformer-block parameters",
    "pct_start": "OneCycleLR warm-up fraction",
    "div_factor": "OneCycleLR initial lr = max_lr / div_factor",
    "final_div_factor": "OneCycleLR final lr = initial lr / final_div_factor",
    "grad_clip": "clip the gradient norm to this value",
    "max_bad_steps": "stop after this many consecutive steps with a NaN/Inf loss (each is skipped and counted; "
    "AMP overflows are skipped and counted but never stop the run)",
    "teacher_preset": "teacher model preset: auto | teacher | teacher-demo",
    "student_preset": "student model preset: auto | student | student-demo",
    "teacher_overrides": "model overrides for the teacher (YAML mapping; config file only)",
    "student_overrides": "model overrides for the student (YAML mapping; config file only)",
    "conv_backend": "sparse convolution of both models: auto (spconv on CUDA when it imports, else torch), "
                    "torch (ours, every device) or spconv (CUDA only; pip install -e '.[gpu]')",
    "teacher_checkpoint": "teacher checkpoint for kd/distill (stage all: the one it trains); a Pointcept "
                          "PTv3 checkpoint is read as --teacher-preset",
    "teacher": "what the kd and distill stages distil from: ptv3 (the teacher network of --teacher-checkpoint or of "
    "the teacher stage) | images (a 2D model's predictions projected onto the points, --image-predictions: L_kld on "
    "the points a camera sees, L_topo against the 2D features; no L_grad, no teacher stage; docs/decisions.md "
    "decision 61)",
    "image_predictions": "with --teacher images: the folder python -m train.image_labels --probs [--features F] wrote "
    "for the training split (and the --unlabelled-split): <scan>.probs.npy, <scan>.features.npy, image_labels.json",
    "camera_pseudo_labels": "with --teacher images and --unlabelled-split: L_seg also trains on the unlabelled "
    "scans, with the camera's most likely class as the label of each point a camera sees (unseen points ignored; "
    "the labelled scans keep their own labels); with --no-kld, the pseudo-label baseline of the soft L_kld "
    "targets (docs/decisions.md decision 65)",
    "pseudo_label_threshold": "with --camera-pseudo-labels: a point takes its pseudo-label only where the camera's "
    "top probability is at least this (0: every point a camera sees)",
    "seg_loss": "L_seg: ce (paper Eq. 8) | ce+lovasz (PTv3 recipe, the default: helps rare classes)",
    "class_weights": "cross-entropy class weighting: none (paper, real data default) | inverse-sqrt "
    "(weights f_c^-1/2 from the training labels; the synthetic CPU demo default)",
    "kld": "switch the logit-distillation term on/off (ablation, paper Table 5)",
    "topo": "switch the topological term on/off (ablation, paper Table 5)",
    "grad": "switch the saliency (gradient) term on/off (ablation, paper Table 5)",
    "lambda_kld": "weight of L_kld (paper Table 7)",
    "lambda_topo": "weight of L_topo (paper Table 7)",
    "lambda_grad": "weight of L_grad (paper Table 7)",
    "kld_temperature": "KL temperature T (docs/decisions.md decision 18)",
    "topo_m": "TPS budget M per cloud (paper; docs/decisions.md decision 14)",
    "topo_normalize": "feature normalisation before persistence: scale | l2 | none",
    "topo_time_budget": "seconds allowed for the H1 computation of each cloud (docs/decisions.md decision 6c; "
    "none in a --config file: no limit)",
    "topo_workers": "persistence worker processes of each training process (0: in the training process); each "
    "gets the process's share of the cores divided among them as threads for its cloud (docs/decisions.md decision 89)",
    "topo_tps": "where TPS runs: auto (device on CUDA where the Triton kernel compiles for this GPU and passes a "
    "start-up check against the host kernel, host otherwise; one line says which and why) | host (the persistence "
    "workers, beside the teacher diagrams) | device (one Triton launch on the GPU; needs CUDA and Triton; "
    "docs/decisions.md decision 42)",
    "topo_dims": "homology dimensions of L_topo (subset of 0 1)",
    "topo_distance": "distance between teacher and student diagrams: pwcd (paper Eq. 2-3) | sinkhorn (unbalanced "
    "entropic OT, paper Table 11, docs/decisions.md decision 31) | persistence-image (TopKD, decision 32)",
    "sinkhorn_eps": "entropic weight of --topo-distance sinkhorn (paper Table 11 sweeps 0.02 0.05 0.1 0.2; "
    "docs/decisions.md decision 31)",
    "pi_norm": "distance between persistence images of --topo-distance persistence-image: l2 (mean squared, "
    "TopKD) | l1",
    "saliency_layers": "decoder stages (1=dec1 coarsest .. 4=dec4) aligned by L_grad (Table 10)",
    "saliency_eps": "epsilon of the per-cloud min-max normalisation (Eq. 6)",
    "saliency_detach_range": "no gradient through the per-cloud min and max of Eq. 6 (same L_grad; its gradient "
    "then spreads over all points instead of mostly each cloud's two extremal points; decision 43; off: the "
    "exact derivative)",
    "kld_class_weights": "weight each point's KL by its class's --class-weights weight, as the cross-entropy is "
    "(decision 44; off: the paper's plain mean over points)",
    "tta": "test-time augmentation at evaluation",
    "eval_max_scans": "evaluate on the first N validation scans only",
    "eval_every_epochs": "during training, every K epochs log the validation mIoU (the scans of the final "
    "evaluation, without TTA; curves.png draws it; docs/decisions.md decision 35; 0: only after training)",
    "latency_runs": "forward passes timed for the latency column",
    "checkpoint_every": "also checkpoint every K iterations (0: only at epoch ends)",
    "checkpoint_minutes": "also checkpoint every M minutes of training (0: off)",
    "preempt_signal": "signals that stop training after the step in flight with one checkpoint and exit status 75 "
    "(docs/decisions.md decision 46; none: die of them)",
    "resume": "continue from <out>/<stage>/checkpoint_last.pt (none there yet: start the stage, and say so)",
    "profile": "time the parts of each step and print a summary",
    "log_term_grads": "every K steps (and the first) log the gradient norm each loss term sends to the student "
    "(one extra backward per term; under DDP the norms of rank 0's share of the batch; curves.png then draws each "
    "term's share of the gradient norm; 0: off)",
    "tensorboard": "write TensorBoard logs",
    "plots": "write the run's pictures (diagrams, bird's-eye views, curves, per-class IoU) next to results.md",
    "progress": "show progress bars (on a terminal; written to a file or pipe: one plain line every "
    "--progress-steps steps or --progress-seconds seconds)",
    "progress_steps": "off a terminal, a progress line every N steps (0: by time only)",
    "progress_seconds": "off a terminal, a progress line every X seconds (0: by steps only)",
    "grid_size": "voxel size in metres of grid sampling (docs/ptv3-and-datasets.md spec D)",
    "synthetic_scenes": "synthetic scenes generated (one scan each; --synthetic-val-fraction of them validate)",
    "synthetic_val_fraction": "fraction of the synthetic scenes used for validation",
    "synthetic_test_fraction": "fraction of the synthetic scenes held out for testing (labelled; 0: none)",
    "synthetic_seed": "seed of the simulated scenes (kept apart from --seed so runs share the data)",
    "synthetic_beams": "beams of the simulated LiDAR",
    "synthetic_variant": "scene style of the simulator: demo (the README's scenes) | fine (harder, same classes: "
    "reflectivity spread 1.8x, small and thin objects 2.5x as frequent, more pole-thin trees; for the capacity "
    "check of a converged study, docs/notes/converged-study.md)",
    "synthetic_azimuth_steps": "azimuth steps of the simulated LiDAR",
    "synthetic_unlabelled_scenes": "synthetic scenes generated without labels into the split 'unlabelled' (scenes of "
    "their own, none in another split; --unlabelled-split unlabelled reads them)",
    "synthetic_cameras": "camera rig rendered with every synthetic frame (colour, per-pixel class and depth, "
    "cameras.json; decision 58): none | ring (front, left, right and back, 100 degrees wide, 160 x 96)",
}

# The --help sections, in order: title -> what the options of the section set.
GROUPS: dict[str, str] = {
    "data": "which data set, where it lies, and the synthetic set's generator",
    "models": "teacher and student architectures and the teacher checkpoint",
    "distillation terms": "which loss terms train the student and their weights (paper Eq. 8 and Table 5)",
    "persistence": "the persistent homology behind L_topo (paper Sec. 3.2, Algorithms 1 and 5)",
    "training": "optimisation (paper App. C.2), processes, determinism, checkpoints and resume",
    "output": "what the run evaluates and writes under --out",
}

# The section of each RunConfig field (a new option needs an entry here and in HELP; a test checks).
GROUP_OF: dict[str, str] = {
    **dict.fromkeys(("dataset", "data_root", "nuscenes_version", "grid_size", "skip_bad_scans", "num_workers",
                     "synthetic_scenes", "synthetic_val_fraction", "synthetic_test_fraction", "synthetic_seed",
                     "synthetic_beams", "synthetic_azimuth_steps", "synthetic_variant", "synthetic_unlabelled_scenes",
                     "synthetic_cameras",
                     "unlabelled_split", "unlabelled_ratio"), "data"),
    **dict.fromkeys(("teacher_preset", "student_preset", "teacher_overrides", "student_overrides",
                     "teacher_checkpoint", "teacher", "image_predictions", "conv_backend"), "models"),
    **dict.fromkeys(("stage", "seg_loss", "class_weights", "camera_pseudo_labels", "pseudo_label_threshold", "kld",
                     "topo", "grad", "lambda_kld", "lambda_topo",
                     "lambda_grad", "kld_temperature", "topo_distance", "sinkhorn_eps", "pi_norm", "saliency_layers",
                     "saliency_eps", "saliency_detach_range", "kld_class_weights"), "distillation terms"),
    **dict.fromkeys(("topo_m", "topo_normalize", "topo_time_budget", "topo_workers", "topo_tps", "topo_dims"),
                    "persistence"),
    **dict.fromkeys(("epochs", "teacher_epochs", "batch_size", "iters_per_epoch", "lr", "weight_decay",
                     "block_lr_scale", "block_keyword", "pct_start", "div_factor", "final_div_factor", "grad_clip",
                     "max_bad_steps", "procs", "seed", "device", "deterministic", "amp", "checkpoint_every",
                     "checkpoint_minutes", "preempt_signal", "resume"), "training"),
    **dict.fromkeys(("out", "tta", "eval_max_scans", "eval_every_epochs", "latency_runs", "profile",
                     "log_term_grads", "tensorboard", "plots", "progress", "progress_steps",
                     "progress_seconds"), "output"),
}

# Defaults of the fields left None in RunConfig because --dataset synthetic replaces them
# (SYNTHETIC_DEMO) when unset; train.options.defaults.fill_defaults applies these to every other run.
RESOLVED_DEFAULTS: dict[str, Any] = {
    "epochs": 50, "batch_size": 12, "topo_m": DEFAULT_M, "grid_size": 0.05, "block_lr_scale": 0.1,
    "class_weights": "none", "synthetic_scenes": 120, "log_term_grads": 0,
}

# What an unset (None) field means, for the fields RESOLVED_DEFAULTS does not give a value.
_UNSET: dict[str, str] = {
    "dataset": "none, required",
    "data_root": "data/<dataset>",
    "out": "runs/<dataset>",
    "teacher_epochs": "--epochs",
    "iters_per_epoch": "the whole split",
    "procs": "2 or 1, see above",
    "grad_clip": "off",
    "teacher_checkpoint": "none; --stage all trains its own",
    "kld": "as --stage", "topo": "as --stage", "grad": "as --stage",
    "topo_workers": "one per cloud of a step (2 x the process's batch), at most this process's share of the cores",
    "eval_max_scans": "all",
    "unlabelled_split": "none: labelled scans only",
    "image_predictions": "none",
    "num_workers": "0 on a CPU, see above on CUDA",
    "checkpoint_minutes": "30 on CUDA, 0 on a CPU",
    "synthetic_beams": "the simulator's", "synthetic_azimuth_steps": "the simulator's",
}

# Paper values of the fields whose default here differs from the paper's.
_PAPER: dict[str, str] = {"seg_loss": "ce", "block_lr_scale": "0.1"}

OUT_CONTENTS = """what --out holds after a run:
  config.yaml                the resolved options (rerun with --config)
  <stage>/                   one folder per stage trained (teacher, student, kd, distill):
    checkpoint_last.pt       the latest full training state (--resume continues from it)
    checkpoint_prev.pt       the one before it (the fallback when the latest is unreadable)
    model_final.pt           the trained weights and model spec (--teacher-checkpoint takes it)
    train_log.csv, val_log.csv, tensorboard/, profile.txt (--profile), eval/report.{json,md}
  results.json, results.md   the table of every stage's per-class IoU, mIoU, parameters, latency
  diagrams.png               teacher vs student persistence diagrams (--stage all: needs the teacher
                             and the CE or distilled student in the same run)
  bev.png, curves.png, per_class_iou.png   every run (--no-plots: no pictures)
  torch_cache/, matplotlib/  caches, unless TORCHINDUCTOR_CACHE_DIR / MPLCONFIGDIR are set
The synthetic data set is written to --data-root, not under --out."""


# The fixed choices of the options that take one (--help lists them; argparse refuses others).
CHOICES: dict[str, tuple[Any, ...]] = {
    "dataset": DATASETS, "stage": STAGES, "nuscenes_version": NUSCENES_VERSIONS, "seg_loss": SEG_LOSSES,
    "class_weights": CLASS_WEIGHTINGS, "topo_distance": DISTANCES, "pi_norm": PI_NORMS,
    "topo_normalize": TOPO_NORMALIZE, "conv_backend": CONV_BACKENDS, "topo_tps": TOPO_TPS,
    "synthetic_variant": SYNTHETIC_VARIANTS, "synthetic_cameras": SYNTHETIC_CAMERAS, "teacher": TEACHERS,
}


def default_text(name: str) -> str:
    """The default of field ``name`` as --help shows it: the value, or what an unset value means,
    then the synthetic demo's value and the paper's where they differ."""
    value = FIELDS[name].default
    if value is dataclasses.MISSING:
        value = FIELDS[name].default_factory()  # type: ignore[misc]
    if value is None:
        value = RESOLVED_DEFAULTS.get(name, _UNSET.get(name))
    if isinstance(value, bool):
        text = "on" if value else "off"
    elif isinstance(value, (list, tuple)):
        text = " ".join(map(str, value)) or "none"
    elif isinstance(value, dict):
        text = "none"
    else:
        text = str(value)
    if name in SYNTHETIC_DEMO:
        text += f"; synthetic CPU demo: {SYNTHETIC_DEMO[name]}"
    if name in _PAPER:
        text += f"; paper: {_PAPER[name]}"
    return text
