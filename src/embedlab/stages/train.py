"""train: fit the extractor with a triplet loss on class-balanced batches, in Lightning."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from embedlab.config import OptimizerParams, Params
from embedlab.data.datasets import DatasetQueryGallery, DatasetWithLabels, worker_threads_init
from embedlab.data.manifest import load_manifest
from embedlab.data.samplers import BalanceSampler
from embedlab.data.transforms import eval_transform, train_transform
from embedlab.io import write_json
from embedlab.lightning import ExtractorModule, MetricValCallback
from embedlab.losses import TripletLossWithMiner
from embedlab.miners import build_miner
from embedlab.models import TimmExtractor, save_extractor
from embedlab.stages.common import (
    CHECKPOINTS_DIR,
    MANIFEST,
    MODELS_DIR,
    TRAIN_REPORT,
    build_metric,
    image_options,
    log,
    make_loader,
)
from embedlab.tracking import open_trackers, write_run_ids
from embedlab.tracking.lightning_logger import HubLogger
from embedlab.tracking.names import metric_names


def build_optimizer(cfg: OptimizerParams, parameters: Any) -> torch.optim.Optimizer:
    """The optimizer named in ``train.optimizer``."""
    if cfg.name == "sgd":
        return torch.optim.SGD(
            parameters, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.name == "adam":
        return torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)


def run_train(params: Params, root: Path = Path(".")) -> dict[str, Any]:
    """Train, export ``models/extractor.*``, write ``reports/train.json``; return its content."""
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
        persistent_workers=cfg.num_workers > 0,
        worker_init_fn=worker_threads_init if cfg.num_workers > 0 else None,
    )
    val_loader = make_loader(val_set, params.validate.batch_size, cfg.num_workers, shuffle=False)

    criterion = TripletLossWithMiner(
        margin=cfg.loss.margin,
        miner=build_miner(cfg.miner.name, **_miner_kwargs(params)),
        need_logs=True,
    )
    total_steps = max(1, len(sampler) * cfg.max_epochs)
    scheduler = None
    if cfg.optimizer.scheduler == "cosine":

        def scheduler(opt: torch.optim.Optimizer) -> Any:
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)

    module = ExtractorModule(
        model, criterion, lambda ps: build_optimizer(cfg.optimizer, ps), scheduler=scheduler
    )

    hub = open_trackers(params, root, stage="train")
    write_run_ids(root, hub)
    history: list[dict[str, float]] = []
    callback = MetricValCallback(
        build_metric(params.validate),
        log_images=cfg.log_images,
        load_image=val_set.read_image,
        image_options=image_options(params.validate, manifest.split("validation")),
        on_metrics=lambda m: history.append(metric_names(m)),
    )
    checkpoint = ModelCheckpoint(dirpath=root / CHECKPOINTS_DIR, save_last=True, save_top_k=0)
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        strategy=cfg.trainer.strategy,
        num_nodes=cfg.trainer.num_nodes,
        precision=cfg.trainer.precision,
        deterministic=cfg.trainer.deterministic,
        logger=HubLogger(hub),
        callbacks=[callback, checkpoint],
        log_every_n_steps=1,
        check_val_every_n_epoch=cfg.val_every_n_epochs,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # BalanceSampler shards itself across ranks
        enable_model_summary=False,
        default_root_dir=str(root / MODELS_DIR),
    )
    started = time.perf_counter()
    try:
        trainer.validate(module, val_loader, verbose=False)  # curves start from the untrained model
        trainer.fit(module, train_loader, val_loader)
        seconds = time.perf_counter() - started
        weights, _ = save_extractor(model, root / MODELS_DIR)
        report: dict[str, Any] = {
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "train_seconds": round(seconds, 2),
        }
        final_loss = _finite(trainer.callback_metrics.get("train/loss"))
        if final_loss is not None:  # DVC metrics files hold numbers only
            report["final_loss"] = round(final_loss, 6)
        write_json(root / TRAIN_REPORT, report)
        hub.log_artifact(weights)
    finally:
        hub.finish()
    write_run_ids(root, hub)
    log.info("trained %d steps in %.1f s", trainer.global_step, seconds)
    curve = [round(h.get("val/OVERALL/cmc@1", float("nan")), 4) for h in history]
    log.info("val/OVERALL/cmc@1 at each validation: %s", curve)
    return report


def _miner_kwargs(params: Params) -> dict[str, Any]:
    miner = params.train.miner
    return {"max_output_triplets": miner.max_output_triplets} if miner.name == "all" else {}


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
