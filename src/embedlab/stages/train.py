"""train: fit the extractor with a metric-learning loss on class-balanced batches, in Lightning.

:func:`run_train` builds the parts (:func:`build_model`, :func:`build_train_loader`,
:func:`build_criterion`, :func:`build_module`, :func:`build_callbacks`,
:func:`build_fit_trainer`) and runs them: a validation of the untrained model, the fit,
a final validation, then the exported extractor and ``reports/train.json``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from embedlab.config import OptimizerParams, Params
from embedlab.data.datasets import DatasetWithLabels
from embedlab.data.loaders import train_loader
from embedlab.data.manifest import Manifest, load_manifest
from embedlab.data.samplers import BalanceSampler, check_batch_shape, item_categories
from embedlab.data.transforms import train_transform
from embedlab.errors import EmbedlabError
from embedlab.io import write_json
from embedlab.lightning import (
    AtomicCheckpointIO,
    EpochLossCallback,
    EpochSeedCallback,
    ExtractorModule,
    Finetuning,
    MetricValCallback,
    ResumeState,
)
from embedlab.lightning.checkpoint import LAST_CHECKPOINT, resume_key
from embedlab.lightning.finetune import warmup_schedule
from embedlab.lightning.trainer import build_trainer
from embedlab.metrics.names import OVERALL, split_tracker_name
from embedlab.models import TimmExtractor, save_extractor
from embedlab.registries import OPTIMIZERS, SAMPLERS
from embedlab.stages.common import (
    CHECKPOINTS_DIR,
    CURVES_DIR,
    MANIFEST,
    MODELS_DIR,
    TRAIN_REPORT,
    log,
)
from embedlab.stages.criterion import build_criterion
from embedlab.stages.validation import validation_setup
from embedlab.tracking import open_trackers, write_run_ids
from embedlab.tracking.base import TrackerHub
from embedlab.tracking.lightning_logger import HubLogger
from embedlab.tracking.names import headline_tags


def build_model(params: Params) -> TimmExtractor:
    """The extractor of ``train.model`` (random init, local weights or the hub)."""
    cfg = params.train.model
    return TimmExtractor(
        cfg.arch,
        weights=cfg.weights,
        normalise_features=cfg.normalise_features,
        input_size=cfg.input_size,
        head=cfg.head,
        embedding_size=cfg.embedding_size,
        **cfg.timm_kwargs,
    )


def build_train_loader(
    params: Params, manifest: Manifest, preprocessing: dict[str, Any]
) -> tuple[DataLoader, BalanceSampler]:
    """Augmented, balanced batches of the train split, and their sampler (``train.sampler``)."""
    cfg = params.train
    # Class indices 0..C-1 for the class-weight losses (a monotonic map: the same batches).
    rows = manifest.split("train")
    codes, _ = class_indices(rows["label"])
    train_set = DatasetWithLabels(
        rows.assign(label=codes), manifest.dataset_root, train_transform(preprocessing, cfg.augment)
    )
    extra: dict[str, Any] = {}
    if SAMPLERS.tag(cfg.sampler.name) == "categories":
        extra["categories"] = item_categories(rows, f"{manifest.source or MANIFEST}: train split")
    # The sampler asks torch.distributed for rank and world size when it is iterated.
    sampler = SAMPLERS.build(
        cfg.sampler.name,
        labels=train_set.get_labels(),
        seed=params.seed,
        **cfg.sampler.arguments(),
        **extra,
    )
    return train_loader(train_set, sampler, cfg.num_workers), sampler


def class_indices(labels: Any) -> tuple[np.ndarray, int]:
    """Labels as class indices ``0 .. C-1`` (order kept), and ``C``.

    Class-weight losses index their weights by label. The map is monotonic, so the
    batches the sampler draws and every label comparison stay as they were.

    >>> codes, n = class_indices([7, 3, 7, 12])
    >>> codes.tolist(), n
    ([1, 0, 1, 2], 3)
    """
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    return codes.astype(np.int64).reshape(-1), len(classes)


def build_optimizer(cfg: OptimizerParams, parameters: Any) -> torch.optim.Optimizer:
    """The optimizer named in ``train.optimizer`` (:data:`embedlab.registries.OPTIMIZERS`)."""
    kwargs: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.name == "sgd":
        kwargs["momentum"] = cfg.momentum
    return OPTIMIZERS.build(cfg.name, params=parameters, **kwargs)


def build_scheduler(params: Params, steps_per_epoch: int) -> Any:
    """The per-step schedule of ``train.optimizer.scheduler`` after the linear warm-up of
    ``train.finetune.warmup_epochs``, as a factory taking the optimizer (None: constant lr).

    >>> from embedlab.config import parse_params
    >>> params = parse_params({"train": {"max_epochs": 2, "finetune": {"warmup_epochs": 0.5}}})
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    >>> schedule = build_scheduler(params, steps_per_epoch=4)(opt)
    >>> opt.param_groups[0]["lr"]  # step 0 of a 2-step warm-up
    0.5
    """
    cfg = params.train.optimizer
    total_steps = max(1, steps_per_epoch * params.train.max_epochs)
    warmup_steps = round(params.train.finetune.warmup_epochs * steps_per_epoch)
    cosine = cfg.scheduler == "cosine"
    if warmup_steps > 0:
        return lambda opt: warmup_schedule(opt, warmup_steps, total_steps, cosine)
    if cosine:  # no warm-up: the schedule of every earlier run, unchanged
        return lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)
    return None


def build_finetuning(
    params: Params, model: torch.nn.Module, criterion: torch.nn.Module
) -> Finetuning:
    """``train.finetune`` on ``model``'s timm backbone (another module is all backbone); a
    freeze that would leave nothing to train (no head, no class weights) is a one-line error.
    """
    cfg, lr = params.train.finetune, params.train.optimizer.lr
    class_weights = any(p.requires_grad for p in criterion.parameters())
    if cfg.freeze_backbone_epochs and params.train.model.head == "none" and not class_weights:
        raise EmbedlabError(
            "params.yaml: train.finetune.freeze_backbone_epochs: with train.model.head: "
            f"none and the {params.train.loss.name!r} loss nothing trains while the "
            "backbone is frozen; add a head (train.model.head: linear) or set it to 0"
        )
    return Finetuning(
        model.model if isinstance(model, TimmExtractor) else model,
        freeze_epochs=cfg.freeze_backbone_epochs,
        batchnorm=cfg.batchnorm,
        backbone_lr=None if cfg.backbone_lr_mult == 1.0 else lr * cfg.backbone_lr_mult,
    )


def build_module(
    params: Params,
    model: torch.nn.Module,
    criterion: torch.nn.Module,
    steps_per_epoch: int,
    inference_transform: Any,
) -> ExtractorModule:
    """The LightningModule: model, criterion, optimizer, the per-step schedule and the
    fine-tuning controls."""
    cfg = params.train.optimizer
    return ExtractorModule(
        model,
        criterion,
        lambda ps: build_optimizer(cfg, ps),
        scheduler=build_scheduler(params, steps_per_epoch),
        inference_transform=inference_transform,
        on_nonfinite=params.train.on_nonfinite,
        criterion_lr=params.train.loss.class_weights_lr,
        channels_last=params.train.channels_last,
        finetune=build_finetuning(params, model, criterion),
    )


@dataclass
class TrainCallbacks:
    """The callbacks of a fit, and the validation history they fill."""

    seeder: EpochSeedCallback
    validation: MetricValCallback | None
    checkpoint: ModelCheckpoint
    losses: EpochLossCallback = field(default_factory=EpochLossCallback)
    history: list[dict[str, float]] = field(default_factory=list)
    """Each validation's flat metrics, with ``epoch`` (epochs done, 0 = untrained)."""
    extra: list[Any] = field(default_factory=list)
    """More callbacks (a benchmark's timer...)."""

    def all(self) -> list[Any]:
        found = [self.seeder, self.validation, self.losses, self.checkpoint, *self.extra]
        return [c for c in found if c is not None]


def build_callbacks(
    params: Params, root: Path, validation: MetricValCallback | None
) -> TrainCallbacks:
    """Per-epoch reseeding, validation (given), the epoch loss and the epoch-end checkpoint."""
    # One file, replaced at the end of every epoch (validated or not). Lightning's save_last
    # with save_top_k=0 would only write it when training ends.
    checkpoint = ModelCheckpoint(
        dirpath=root / CHECKPOINTS_DIR,
        filename=Path(LAST_CHECKPOINT).stem,
        save_top_k=1,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    return TrainCallbacks(EpochSeedCallback(params.seed), validation, checkpoint)


def build_fit_trainer(
    params: Params, root: Path, logger: HubLogger, callbacks: TrainCallbacks
) -> L.Trainer:
    """The training Trainer on ``train.trainer``, with atomic checkpoints."""
    cfg = params.train
    return build_trainer(
        cfg.trainer,
        max_epochs=cfg.max_epochs,
        logger=logger,
        callbacks=callbacks.all(),
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=1,
        check_val_every_n_epoch=cfg.val_every_n_epochs,
        default_root_dir=str(root / MODELS_DIR),
    )


def run_train(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Train, export ``models/extractor.*``, write ``reports/train.json``; return its content.

    Runs on every rank of a distributed launch (Lightning's ``ddp`` re-runs this script per
    device; ``torchrun``/SLURM start one per device): only global rank 0 opens tracker runs
    and writes files. An unfinished run with the same params and data resumes from
    ``models/checkpoints/last.ckpt`` into the same tracker runs (see
    :mod:`embedlab.lightning.checkpoint`), with the same result as an uninterrupted run.
    """
    cfg = params.train
    L.seed_everything(params.seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(cfg.trainer.deterministic, warn_only=True)
    manifest = load_manifest(root / MANIFEST)
    # Before anything is built: a batch the train split cannot fill is a params error.
    check_batch_shape(
        manifest.split("train")["label"], cfg.sampler.n_labels, cfg.sampler.n_instances
    )
    model = build_model(params)  # first: its random init draws from the seeded stream
    loader, sampler = build_train_loader(params, manifest, model.preprocessing)
    _, num_classes = class_indices(manifest.split("train")["label"])
    criterion = build_criterion(params, num_classes, model.feat_dim)
    history: list[dict[str, float]] = []
    val_loader, validation = validation_setup(
        params,
        manifest,
        model.preprocessing,
        log_images=cfg.log_images,
        num_workers=cfg.num_workers,
        persistent_workers=True,
        on_metrics=lambda table: history.append(
            {"epoch": validation.last_epoch, **table.tracker_names()}
        ),
    )
    callbacks = build_callbacks(params, root, validation)
    callbacks.history = history
    logger = HubLogger(TrackerHub([]))  # the real hub is opened below, on rank 0 only
    trainer = build_fit_trainer(params, root, logger, callbacks)
    steps_per_epoch = sampler.batches_per_rank(trainer.world_size)
    module = build_module(
        params, model, criterion, steps_per_epoch, val_loader.dataset.batch_transform
    )

    key = resume_key(params, root / MANIFEST)
    resume = ResumeState.resumable(root / CHECKPOINTS_DIR, key)  # read-only: same on all ranks
    state = resume
    # The rank is known once the Trainer exists (from the launcher's environment).
    if trainer.is_global_zero:
        if resume is None:
            state = ResumeState.start_fresh(root / CHECKPOINTS_DIR, key)
        else:
            log.info("resuming the interrupted run from %s", resume.checkpoint)
        # A resumed run logs into the runs it started (DVC deleted reports/run.json).
        logger.hub = open_trackers(
            params, root, stage="train", run_ids=resume.run_ids if resume else None
        )
        assert state is not None
        state.run_ids = write_run_ids(root, logger.hub)
        state.save()
    report = _fit(params, root, trainer, module, loader, val_loader, callbacks, resume)
    if trainer.is_global_zero:
        assert state is not None
        state.finish()
        headline = headline_tags()[0]
        curve = [round(h.get(headline, float("nan")), 4) for h in history]
        write_curves(root, history, callbacks.losses.losses)
        log.info("trained %d steps in %.1f s", trainer.global_step, report["train_seconds"])
        log.info("%s at each validation: %s", headline, curve)
    return report


def _fit(
    params: Params,
    root: Path,
    trainer: L.Trainer,
    module: ExtractorModule,
    loader: DataLoader,
    val_loader: DataLoader,
    callbacks: TrainCallbacks,
    resume: ResumeState | None,
) -> dict[str, Any]:
    """Validate, fit, validate the final weights, export; the hub is finished in any case."""
    cfg = params.train
    hub = trainer.logger.hub  # type: ignore[union-attr]
    started = time.perf_counter()
    # resume.json lives beside the checkpoint on purpose; Lightning would warn on every run.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # Every rank computes the same validation metrics from the gathered embeddings.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('val/")
    try:
        if resume is None:  # curves start from the untrained model
            trainer.validate(module, val_loader, verbose=False)
        trainer.fit(
            module,
            loader,
            val_loader,
            ckpt_path=resume.checkpoint if resume is not None else None,
            weights_only=True,
        )
        final_loss = _finite(trainer.callback_metrics.get("train/loss"))  # validate resets it
        if cfg.max_epochs % cfg.val_every_n_epochs:  # the last epoch was not validated
            trainer.validate(module, val_loader, verbose=False)
        report: dict[str, Any] = {
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "resumed_from_epoch": _resumed_from(callbacks.seeder, trainer, resume is not None),
            "train_seconds": round(time.perf_counter() - started, 2),
        }
        if final_loss is not None:  # DVC metrics files hold numbers only
            report["final_loss"] = round(final_loss, 6)
        if module.skipped_batches:  # train.on_nonfinite: skip_batch
            report["skipped_batches"] = module.skipped_batches
        if not trainer.is_global_zero:
            return report
        weights, _ = save_extractor(module.model, root / MODELS_DIR)
        write_json(root / TRAIN_REPORT, report)
        hub.log_artifact(weights)
    finally:
        hub.finish()
    write_run_ids(root, hub)  # a backend that failed during the fit is recorded
    return report


def write_curves(
    root: Path, history: list[dict[str, float]], losses: list[tuple[int, float]]
) -> None:
    """``reports/plots/validation.json`` and ``loss.json``: one row per epoch, for
    ``dvc plots show`` / ``dvc plots diff`` (x = epoch). Headline OVERALL metrics only.

    >>> import tempfile, json
    >>> root = Path(tempfile.mkdtemp())
    >>> write_curves(root, [{"epoch": 0, "val/OVERALL/cmc@1": 0.5, "val/x/cmc@1": 0.1}],
    ...              [(1, 0.25)])
    >>> json.loads((root / "reports/plots/validation.json").read_text())
    [{'epoch': 0, 'cmc@1': 0.5}]
    """
    rows: dict[int, dict[str, float]] = {}
    for entry in history:  # a repeated final validation keeps one row
        names = {k: split_tracker_name(k) for k in entry}
        row = {n[1]: v for k, v in entry.items() if (n := names[k]) and n[0] == OVERALL}
        rows[int(entry["epoch"])] = {"epoch": int(entry["epoch"]), **row}
    write_json(root / CURVES_DIR / "validation.json", [rows[e] for e in sorted(rows)])
    write_json(
        root / CURVES_DIR / "loss.json",
        [{"epoch": epoch, "loss": round(loss, 6)} for epoch, loss in losses],
    )


def _resumed_from(seeder: EpochSeedCallback, trainer: L.Trainer, resumed: bool) -> int:
    """Epochs done before this process started (all of them if the checkpoint was final)."""
    if seeder.first_epoch is not None:
        return seeder.first_epoch
    return trainer.current_epoch if resumed else 0


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
