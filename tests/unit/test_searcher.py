"""The embed stage's outputs and Searcher over them, on a tiny self-made image folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import embedlab
from embedlab.config import parse_params
from embedlab.data.datasets import load_image
from embedlab.data.manifest import write_manifest
from embedlab.data.transforms import eval_transform
from embedlab.embedding.searcher import Searcher
from embedlab.errors import EmbedlabError
from embedlab.models import TimmExtractor, load_extractor, save_extractor
from embedlab.retrieval import pairwise_dist
from embedlab.stages.embed import run_embed

TINY = {"img_size": 16, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}
N_CLASSES, PER_CLASS = 4, 4
VALIDATION_LABELS = (2, 3)


def make_images(folder: Path, n_classes: int = N_CLASSES, per_class: int = PER_CLASS) -> list[str]:
    """``<label>/<i>.png`` noisy images, one base colour per class; returns relative paths."""
    rng = np.random.default_rng(0)
    paths = []
    for label in range(n_classes):
        base = rng.integers(0, 256, 3)
        for i in range(per_class):
            noise = rng.integers(-60, 60, (12 + i, 14, 3))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            (folder / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / str(label) / f"{i}.png")
            paths.append(f"{label}/{i}.png")
    return paths


def make_workspace(root: Path, index: str = "exact", seed: int = 0) -> Path:
    """A repo-like folder: data/prepared (images + manifest), models/, data/embeddings."""
    prepared = root / "data" / "prepared"
    paths = make_images(prepared / "images")
    labels = [int(p.split("/")[0]) for p in paths]
    validation = [label in VALIDATION_LABELS for label in labels]
    df = pd.DataFrame(
        {
            "label": labels,
            "path": [f"images/{p}" for p in paths],
            "split": ["validation" if v else "train" for v in validation],
            "is_query": validation,
            "is_gallery": [
                v and not p.endswith("0.png") for v, p in zip(validation, paths, strict=True)
            ],
        }
    )
    write_manifest(df, prepared, prepared)
    torch.manual_seed(seed)
    save_extractor(TimmExtractor("vit_tiny_patch16_224", **TINY), root / "models")
    params = parse_params({"embed": {"index": index, "batch_size": 5}, "tracking": {"loggers": []}})
    run_embed(params, root)
    return root / "data" / "embeddings"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_workspace(tmp_path_factory.mktemp("ws"))


def reference_embeddings(root: Path, files: list[str]) -> torch.Tensor:
    """The extractor on images preprocessed one by one with eval_transform."""
    model = load_extractor(root / "models")
    transform = eval_transform(model.preprocessing)
    with torch.inference_mode():
        return model(torch.stack([transform(load_image(f)) for f in files]))


def test_embed_stage_writes_embeddings_items_and_info(workspace: Path) -> None:
    root = workspace.parent.parent
    embeddings = np.load(workspace / "embeddings.npy")
    items = pd.read_parquet(workspace / "items.parquet")
    info = json.loads((workspace / "info.json").read_text())
    assert embeddings.dtype == np.float32 and embeddings.shape == (N_CLASSES * PER_CLASS, 32)
    assert list(items.columns) == ["row_id", "path", "label", "split", "is_query", "is_gallery"]
    assert items["row_id"].tolist() == list(range(16))
    assert info["rows"] == 16 and info["dim"] == 32 and info["index"] == "exact"
    assert info["metric"] == "euclidean" and info["index_file"] is None
    assert info["extractor"]["preprocessing"]["input_size"] == [3, 16, 16]
    files = [str(Path(info["dataset_root"]) / p) for p in items["path"]]
    expected = reference_embeddings(root, files).numpy()
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)  # batched uint8 path == per-item
    assert not (workspace / "index.faiss").exists()


def test_search_with_images_equals_brute_force(workspace: Path) -> None:
    searcher = Searcher.load(workspace)
    root = workspace.parent / "prepared" / "images"
    queries = [str(root / "2" / "1.png"), str(root / "0" / "3.png")]
    result = searcher.search(queries, k=6)
    gallery = torch.from_numpy(np.load(workspace / "embeddings.npy"))
    q = reference_embeddings(workspace.parent.parent, queries)
    dist = pairwise_dist(q, gallery)
    expected = torch.sort(dist, dim=1, stable=True).indices[:, :6].numpy()
    assert np.array_equal(result.ids, expected)
    # sqrt amplifies float32 cancellation near 0 (~1e-7 -> ~3e-4): compare at 1e-3.
    expected_dist = torch.gather(dist, 1, torch.from_numpy(expected)).numpy()
    np.testing.assert_allclose(result.distances, expected_dist, atol=1e-3)
    assert result.ids[:, 0].tolist() == [9, 3]  # a dataset image finds itself first
    assert result.distances[:, 0] == pytest.approx([0, 0], abs=1e-3)
    assert result.paths[0][0] == "images/2/1.png" and Path(result.files[0][0]).is_file()
    assert result.query_labels == [2, 0] and result.queries == queries
    assert result.labels[0, 0] == 2


def test_exclude_self_drops_only_the_query_row(workspace: Path) -> None:
    searcher = Searcher.load(workspace)
    query = str(workspace.parent / "prepared" / "images" / "3" / "2.png")
    plain = searcher.search(query, k=4)
    excluded = searcher.search(query, k=4, exclude_self=True)
    assert plain.ids[0, 0] == 14 and 14 not in excluded.ids[0].tolist()
    assert excluded.ids[0, :3].tolist() == plain.ids[0, 1:4].tolist()
    pil = searcher.search(Image.open(query), k=4)  # a PIL image has no dataset row
    assert pil.ids.tolist() == plain.ids.tolist() and pil.query_labels == [None]


@pytest.mark.parametrize(
    ("gallery", "rows"),
    [
        ("all", range(16)),
        ("validation", range(8, 16)),
        ("train", range(8)),
        ("gallery", [9, 10, 11, 13, 14, 15]),
    ],
)
def test_gallery_selection(workspace: Path, gallery: str, rows: object) -> None:
    searcher = Searcher.load(workspace, gallery=gallery)
    result = searcher.search(np.load(workspace / "embeddings.npy")[:3], k=20)
    found = result.ids[result.ids >= 0]
    assert set(found.tolist()) == set(rows)
    assert result.ids.shape == (3, 20) and (result.ids[:, len(list(rows)) :] == -1).all()


def test_embeddings_query_and_frame(workspace: Path) -> None:
    embeddings = np.load(workspace / "embeddings.npy")
    result = embedlab.Searcher.load(workspace).search(torch.from_numpy(embeddings[5]), k=2)
    frame = result.to_frame()
    assert list(frame.columns) == ["query", "rank", "row_id", "path", "label", "distance"]
    assert frame["row_id"].iloc[0] == 5 and frame["rank"].tolist() == [1, 2]
    assert frame["query"].iloc[0] == "embedding 0"


def test_faiss_built_by_embed_equals_exact(tmp_path: Path, workspace: Path) -> None:
    faiss_dir = make_workspace(tmp_path, index="faiss")
    info = json.loads((faiss_dir / "info.json").read_text())
    assert info["index"] == "faiss" and (faiss_dir / info["index_file"]).is_file()
    queries = np.random.default_rng(1).standard_normal((5, 32)).astype(np.float32)
    for gallery in ("all", "gallery"):
        via_faiss = Searcher.load(faiss_dir, gallery=gallery).search(queries, k=5)
        exact = Searcher.load(faiss_dir, gallery=gallery, index="exact").search(queries, k=5)
        assert np.array_equal(via_faiss.ids, exact.ids)
        np.testing.assert_allclose(via_faiss.distances, exact.distances, atol=1e-4)
    assert type(Searcher.load(faiss_dir).index).__name__ == "FaissIndex"


def test_a_different_extractor_is_refused(tmp_path: Path) -> None:
    embeddings_dir = make_workspace(tmp_path)
    torch.manual_seed(99)  # "retrained" weights, same architecture
    save_extractor(TimmExtractor("vit_tiny_patch16_224", **TINY), tmp_path / "models")
    searcher = Searcher.load(embeddings_dir)
    searcher.search(np.zeros(32, np.float32), k=1)  # embeddings alone need no extractor
    query = str(tmp_path / "data" / "prepared" / "images" / "0" / "0.png")
    with pytest.raises(EmbedlabError, match=r"extractor.safetensors: weights changed since"):
        searcher.search(query, k=1)


def test_load_errors_are_one_line(tmp_path: Path, workspace: Path) -> None:
    with pytest.raises(EmbedlabError, match=r"info.json: not found \(run the embed stage first\)"):
        Searcher.load(tmp_path / "nothing")
    with pytest.raises(EmbedlabError, match=r"index.faiss: index not found"):
        Searcher.load(workspace, index="faiss")  # embed.index was exact
    with pytest.raises(EmbedlabError, match=r"gallery: expected one of all, gallery, train"):
        Searcher.load(workspace, gallery="queries")
    with pytest.raises(EmbedlabError, match=r"expected dimension 32, got 3"):
        Searcher.load(workspace).search(np.zeros((1, 3)), k=1)
    with pytest.raises(EmbedlabError, match=r"missing.png: cannot read image"):
        Searcher.load(workspace).search(str(tmp_path / "missing.png"), k=1)


def test_embed_dataset_in_worker_processes_equals_in_process(workspace: Path) -> None:
    from embedlab.data.datasets import DatasetQueryGallery
    from embedlab.embedding import embed_dataset

    root = workspace.parent.parent
    items = pd.read_parquet(workspace / "items.parquet")
    model = load_extractor(root / "models")
    dataset = DatasetQueryGallery(
        items, workspace.parent / "prepared", eval_transform(model.preprocessing)
    )
    in_process = embed_dataset(model, dataset, batch_size=5, num_workers=0)
    in_workers = embed_dataset(model, dataset, batch_size=5, num_workers=1)
    assert np.array_equal(in_process, in_workers)
    assert np.array_equal(in_process, np.load(workspace / "embeddings.npy"))


@pytest.mark.parametrize("head", ["features", "stacked"])
def test_search_rerank_reorders_the_top_n_by_the_pairwise_model(tmp_path: Path, head: str) -> None:
    from embedlab.io import file_sha256
    from embedlab.models.pairwise import build_pairwise_model, save_reranker

    embeddings_dir = make_workspace(tmp_path)
    models = tmp_path / "models"
    searcher = Searcher.load(embeddings_dir)
    query = str(tmp_path / "data" / "prepared" / "images" / "2" / "1.png")
    with pytest.raises(EmbedlabError, match="re-ranker not found"):
        searcher.search(query, k=6, rerank=3)  # models/reranker/ missing
    torch.manual_seed(1)
    model = build_pairwise_model(load_extractor(models), head, hidden=8).eval()
    save_reranker(model, models / "reranker", extractor_sha256="0" * 64)
    with pytest.raises(EmbedlabError, match="another extractor"):
        Searcher.load(embeddings_dir).search(query, k=6, rerank=3)
    save_reranker(model, models / "reranker", file_sha256(models / "extractor.safetensors"))
    searcher = Searcher.load(embeddings_dir)
    plain = searcher.search(query, k=6)
    reranked = searcher.search(query, k=6, rerank=3)
    assert reranked.ids[:, 3:].tolist() == plain.ids[:, 3:].tolist()  # past N: unchanged
    assert sorted(reranked.ids[0, :3].tolist()) == sorted(plain.ids[0, :3].tolist())
    assert bool((np.diff(reranked.distances[0]) >= 0).all())
    # the first three, ordered by the model's distance to the query
    transform = eval_transform(model.backbone.preprocessing)
    files = [query, *[searcher.resolve(p) for p in plain.paths[0][:3]]]
    images = torch.stack([transform(load_image(f)) for f in files])
    with torch.inference_mode():
        scores = model(images[:1].expand(3, -1, -1, -1), images[1:]).tolist()
    expected = [plain.ids[0, i] for i in sorted(range(3), key=lambda i: scores[i])]
    assert reranked.ids[0, :3].tolist() == expected
    with pytest.raises(EmbedlabError, match="image queries"):
        searcher.search(np.zeros((1, 32), dtype=np.float32), k=3, rerank=2)
    # a threshold decides on each item's embedding distance, whatever order re-ranking chose
    cut = float(plain.distances[0, 1] + plain.distances[0, 2]) / 2  # between 2nd and 3rd
    decided = searcher.search(query, k=6, rerank=3, threshold=cut)
    embedding_distance = dict(zip(plain.ids[0].tolist(), plain.distances[0].tolist(), strict=True))
    expected_matches = [embedding_distance[i] < cut for i in decided.ids[0].tolist()]
    assert decided.matches[0].tolist() == expected_matches and sum(expected_matches) == 2
