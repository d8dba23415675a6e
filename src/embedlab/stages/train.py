"""train: fit the extractor with a triplet loss on class-balanced batches, in Lightning."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from embedlab.config import OptimizerParams, Params
from embedlab.data.datasets import DatasetQueryGallery, DatasetWithLabels, worker_threads_init
from embedlab.data.manifest import load_manifest
from embedlab.data.samplers import BalanceSampler, ShardedBatchSampler
from embedlab.data.transforms import eval_transform, train_transform
from embedlab.io import write_json
from embedlab.lightning import (
    AtomicCheckpointIO,
    EpochSeedCallback,
    ExtractorModule,
    MetricValCallback,
    ResumeState,
)
from embedlab.lightning.checkpoint import LAST_CHECKPOINT, resume_key
from embedlab.losses import TripletLossWithMiner
from embedlab.miners import build_miner
from embedlab.models import TimmExtractor, save_extractor
from embedlab.registries import OPTIMIZERS
from embedlab.stages.common import (
    CHECKPOINTS_DIR,
    MANIFEST,
    MODELS_DIR,
    TRAIN_REPORT,
    build_metric,
    image_options,
    log,
)
from embedlab.tracking import RUN_FILE, open_trackers, read_run_ids, write_run_ids
from embedlab.tracking.base import TrackerHub
from embedlab.tracking.lightning_logger import HubLogger
from embedlab.tracking.names import metric_names


def build_optimizer(cfg: OptimizerParams, parameters: Any) -> torch.optim.Optimizer:
    """The optimizer named in ``train.optimizer`` (:data:`embedlab.registries.OPTIMIZERS`)."""
    kwargs: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.name == "sgd":
        kwargs["momentum"] = cfg.momentum
    return OPTIMIZERS.build(cfg.name, params=parameters, **kwargs)


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
    model = TimmExtractor(
        cfg.model.arch,
        weights=cfg.model.weights,
        normalise_features=cfg.model.normalise_features,
        **cfg.model.timm_kwargs,
    )
    pre = model.preprocessing
    train_set = DatasetWithLabels(
        manifest.split("train"), manifest.dataset_root, train_transform(pre, cfg.augment)
    )
    val_set = DatasetQueryGallery(
        manifest.split("validation"), manifest.dataset_root, eval_transform(pre)
    )
    # Both samplers ask torch.distributed for rank and world size when they are iterated.
    sampler = BalanceSampler(
        train_set.get_labels(),
        n_labels=cfg.sampler.n_labels,
        n_instances=cfg.sampler.n_instances,
        seed=params.seed,
    )
    train_loader = torch.utils.data.DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=cfg.num_workers,
        # Fresh workers every epoch, seeded from the per-epoch reseed (EpochSeedCallback):
        # persistent workers would carry their RNG across epochs, and a resumed run would
        # then augment differently from an uninterrupted one.
        persistent_workers=False,
        worker_init_fn=worker_threads_init if cfg.num_workers > 0 else None,
    )
    # Validation is sharded by whole single-process batches, so each embedding is bitwise
    # the single-process one; MetricValCallback gathers them and drops the padding repeats.
    val_loader = torch.utils.data.DataLoader(
        val_set,
        batch_sampler=ShardedBatchSampler(len(val_set), params.validate.batch_size),
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=worker_threads_init if cfg.num_workers > 0 else None,
    )

    criterion = TripletLossWithMiner(
        margin=cfg.loss.margin,
        miner=build_miner(cfg.miner.name, **_miner_kwargs(params)),
        need_logs=True,
    )
    logger = HubLogger(TrackerHub([]))  # the real hub is opened below, on rank 0 only
    history: list[dict[str, float]] = []
    callback = MetricValCallback(
        build_metric(params.validate),
        log_images=cfg.log_images,
        load_image=val_set.read_image,
        image_options=image_options(params.validate, manifest.split("validation")),
        on_metrics=lambda m: history.append(metric_names(m)),
    )
    seeder = EpochSeedCallback(params.seed)
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
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        strategy=cfg.trainer.strategy,
        num_nodes=cfg.trainer.num_nodes,
        precision=cfg.trainer.precision,
        deterministic=cfg.trainer.deterministic,
        logger=logger,
        callbacks=[seeder, callback, checkpoint],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=1,
        check_val_every_n_epoch=cfg.val_every_n_epochs,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # BalanceSampler and ShardedBatchSampler shard themselves
        enable_model_summary=False,
        default_root_dir=str(root / MODELS_DIR),
    )
    # The rank is known once the Trainer exists (from the launcher's environment).
    is_zero = trainer.is_global_zero
    total_steps = max(1, sampler.batches_per_rank(trainer.world_size) * cfg.max_epochs)
    scheduler = None
    if cfg.optimizer.scheduler == "cosine":

        def scheduler(opt: torch.optim.Optimizer) -> Any:
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)

    module = ExtractorModule(
        model, criterion, lambda ps: build_optimizer(cfg.optimizer, ps), scheduler=scheduler
    )

    key = resume_key(params, root / MANIFEST)
    resume = ResumeState.resumable(root / CHECKPOINTS_DIR, key)  # read-only: same on all ranks
    state = resume
    if is_zero:
        if resume is None:
            state = ResumeState.start_fresh(root / CHECKPOINTS_DIR, key)
            logger.hub = open_trackers(params, root, stage="train")
        else:
            log.info("resuming the interrupted run from %s", resume.checkpoint)
            # DVC deleted reports/run.json before rerunning the stage; the ids survive here.
            write_json(root / RUN_FILE, {"run_ids": resume.run_ids, "failed": {}})
            logger.hub = open_trackers(params, root, stage="train", resume=True)
        write_run_ids(root, logger.hub)
        assert state is not None
        state.run_ids = read_run_ids(root)
        state.save()
    hub = logger.hub
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
            train_loader,
            val_loader,
            ckpt_path=resume.checkpoint if resume is not None else None,
            weights_only=True,
        )
        final_loss = _finite(trainer.callback_metrics.get("train/loss"))  # validate resets it
        if cfg.max_epochs % cfg.val_every_n_epochs:  # the last epoch was not validated
            trainer.validate(module, val_loader, verbose=False)
        seconds = time.perf_counter() - started
        report: dict[str, Any] = {
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "resumed_from_epoch": _resumed_from(seeder, trainer, resume is not None),
            "train_seconds": round(seconds, 2),
        }
        if final_loss is not None:  # DVC metrics files hold numbers only
            report["final_loss"] = round(final_loss, 6)
        if history:  # metrics of the final weights, gathered from every rank
            report["last_validation"] = history[-1]
        if not is_zero:
            return report
        weights, _ = save_extractor(model, root / MODELS_DIR)
        write_json(root / TRAIN_REPORT, report)
        hub.log_artifact(weights)
    finally:
        hub.finish()
    write_run_ids(root, hub)
    assert state is not None
    state.finish()
    log.info("trained %d steps in %.1f s", trainer.global_step, seconds)
    curve = [round(h.get("val/OVERALL/cmc@1", float("nan")), 4) for h in history]
    log.info("val/OVERALL/cmc@1 at each validation: %s", curve)
    return report


def _resumed_from(seeder: EpochSeedCallback, trainer: L.Trainer, resumed: bool) -> int:
    """Epochs done before this process started (all of them if the checkpoint was final)."""
    if seeder.first_epoch is not None:
        return seeder.first_epoch
    return trainer.current_epoch if resumed else 0


def _miner_kwargs(params: Params) -> dict[str, Any]:
    miner = params.train.miner
    return {"max_output_triplets": miner.max_output_triplets} if miner.name == "all" else {}


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
