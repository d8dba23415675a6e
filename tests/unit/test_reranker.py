"""The learned pairwise re-ranker: mining, training, re-ranking and the extractor check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from embedlab.config import parse_params
from embedlab.embedding.reranker import PairwiseReranker, rerank_top_n
from embedlab.embedding.reranker_training import PairwiseTraining, fit_pairwise
from embedlab.errors import EmbedlabError
from embedlab.miners.neighbour_pairs import mine_neighbour_pairs
from embedlab.models import TimmExtractor
from embedlab.models.pairwise import (
    PAIR_HEADS,
    PairwiseModel,
    build_pairwise_model,
    load_reranker,
    save_reranker,
)
from embedlab.retrieval import QueryGallery, retrieve
from embedlab.stages.common import MODELS_DIR, RERANKER_DIR
from embedlab.stages.validate import validation_reranker

SIDE = 8
COLOURS = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])


def coloured_images(labels: list[int], seed: int) -> torch.Tensor:
    """One flat colour per class plus pixel noise: a task whose answer is the colour."""
    generator = torch.Generator().manual_seed(seed)
    base = COLOURS[torch.tensor(labels)][:, :, None, None].expand(-1, -1, SIDE, SIDE)
    return base + 0.3 * torch.randn(len(labels), 3, SIDE, SIDE, generator=generator)


def small_model(seed: int = 0, hidden: int = 16, head: str = "features") -> PairwiseModel:
    torch.manual_seed(seed)
    return build_pairwise_model(TimmExtractor("resnet10t", input_size=SIDE), head, hidden)


@pytest.fixture(scope="module", params=PAIR_HEADS)
def trained(request: pytest.FixtureRequest) -> PairwiseModel:
    """A re-ranker of each head trained on pairs mined from a (random-init) extractor's
    train neighbours."""
    labels = [c for c in range(3) for _ in range(10)]
    images = coloured_images(labels, seed=1)
    torch.manual_seed(0)
    extractor = TimmExtractor("resnet10t", input_size=SIDE)
    with torch.no_grad():
        embeddings = extractor.eval()(images)
    model = build_pairwise_model(extractor, request.param, hidden=16)
    assert model.head_kind == request.param
    pairs = mine_neighbour_pairs(embeddings, torch.tensor(labels), top_n=5, hard_negatives=3)
    assert bool(pairs.different.any()) and bool((~pairs.different).any())
    settings = PairwiseTraining(epochs=8, batch_size=32, lr=1e-3, head_lr=1e-2)
    history = fit_pairwise(model, lambda p: images[p], pairs, settings)
    assert history[-1].loss < history[0].loss
    return model


def test_mined_pairs_are_positives_of_the_top_n_and_the_hardest_negatives() -> None:
    x = torch.tensor([[0.0], [0.1], [0.2], [0.3], [5.0]])
    labels = torch.tensor([0, 1, 0, 0, 0])
    pairs = mine_neighbour_pairs(x, labels, top_n=2, hard_negatives=1)
    triples = (pairs.anchors.tolist(), pairs.others.tolist(), pairs.different.tolist())
    rows = set(zip(*triples, strict=True))
    # item 0: neighbours 1 (neg), 2 (pos) in the top 2; item 4 (pos) is far: not a pair
    assert (0, 2, False) in rows and (0, 1, True) in rows and (0, 3, False) not in rows
    assert (0, 4, False) not in rows
    assert all(a != o for a, o, _ in rows)  # never the item itself
    # at most one negative per anchor
    assert int(pairs.different[pairs.anchors == 2].sum()) == 1


def test_mined_positives_skip_the_anchors_own_sequence() -> None:
    x = torch.tensor([[0.0], [0.1], [0.2], [0.3]])
    labels = torch.tensor([0, 0, 0, 1])
    # items 0 and 1 are frames of one sequence: as in validation, never each other's match
    pairs = mine_neighbour_pairs(
        x, labels, top_n=1, hard_negatives=0, sequence=torch.tensor([7, 7, -1, -1])
    )
    rows = set(zip(pairs.anchors.tolist(), pairs.others.tolist(), strict=True))
    assert (0, 1) not in rows and (1, 0) not in rows
    assert (0, 2) in rows and (1, 2) in rows  # the nearest item of another sequence
    plain = mine_neighbour_pairs(x, labels, top_n=1, hard_negatives=0)
    assert (0, 1) in set(zip(plain.anchors.tolist(), plain.others.tolist(), strict=True))


@pytest.mark.slow  # trains a small re-ranker per head (about 17 s each on one loaded CPU thread)
def test_trained_reranker_fixes_a_planted_misranking(trained: PairwiseModel) -> None:
    labels = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    images = coloured_images(labels, seed=7)  # unseen images of the same task
    # Planted embeddings: each query's nearest item is of another class.
    position = torch.tensor([0.0, 2.0, 4.0, 0.5, 2.5, 4.5, 1.0, 3.0, 5.0])
    qg = QueryGallery.from_columns(position[:, None], labels)
    plain = retrieve(qg, k=8)
    assert not bool(plain.relevance[:, 0].all())  # the planted misranking
    reranked = PairwiseReranker(trained, lambda p: images[p], top_n=8)(plain)
    assert bool(reranked.relevance[:, :2].all())  # both right-class items come first
    assert not bool(reranked.relevance[:, 2:].any())
    assert bool((reranked.distances.diff(dim=1) >= 0).all())


@pytest.mark.parametrize("head", PAIR_HEADS)
@pytest.mark.parametrize("distance_weight", [0.0, 0.5])
def test_order_past_n_never_changes_and_distances_stay_sorted(
    head: str, distance_weight: float
) -> None:
    generator = torch.Generator().manual_seed(3)
    n_items = 30
    labels = torch.randint(0, 4, (n_items,), generator=generator)
    images = coloured_images((labels % 3).tolist(), seed=3)
    qg = QueryGallery.from_columns(torch.randn(n_items, 5, generator=generator), labels)
    plain = retrieve(qg, k=12)
    top_n = 4
    model = small_model(head=head)
    reranker = PairwiseReranker(model, lambda p: images[p], top_n, distance_weight=distance_weight)
    reranked = reranker(plain)
    assert torch.equal(reranked.retrieved[:, top_n:], plain.retrieved[:, top_n:])
    assert torch.equal(reranked.distances[:, top_n:], plain.distances[:, top_n:])
    head_before = plain.retrieved[:, :top_n].sort(dim=1).values
    assert torch.equal(reranked.retrieved[:, :top_n].sort(dim=1).values, head_before)
    assert bool((reranked.distances.diff(dim=1) >= 0).all())
    # the re-ranked band lies between the first distance and the (N+1)-th
    assert bool((reranked.distances[:, :top_n] >= plain.distances[:, :1]).all())
    assert bool((reranked.distances[:, :top_n] <= plain.distances[:, top_n : top_n + 1]).all())


@pytest.mark.parametrize("head", PAIR_HEADS)
def test_top_n_is_clipped_to_the_gallery(head: str) -> None:
    labels = [0, 0, 1, 1]
    images = coloured_images(labels, seed=4)
    qg = QueryGallery.from_columns(torch.tensor([[0.0], [1.0], [2.0], [4.0]]), labels)
    plain = retrieve(qg, k=6)  # 3 admissible items per query: 3 columns of padding
    reranked = PairwiseReranker(small_model(head=head), lambda p: images[p], top_n=50)(plain)
    assert reranked.width == plain.width
    assert bool((reranked.retrieved[:, 3:] == -1).all())
    assert bool(torch.isinf(reranked.distances[:, 3:]).all())
    assert bool(torch.isfinite(reranked.distances[:, :3]).all())
    assert torch.equal(
        reranked.retrieved[:, :3].sort(dim=1).values, plain.retrieved[:, :3].sort(dim=1).values
    )


@pytest.mark.parametrize("head", PAIR_HEADS)
def test_saved_reranker_loads_and_refuses_another_extractor(tmp_path: Path, head: str) -> None:
    model = small_model(hidden=8, head=head).eval()
    model.distance_weight = 0.25
    save_reranker(model, tmp_path, extractor_sha256="a" * 64, top_n=5)
    loaded = load_reranker(tmp_path, extractor_sha256="a" * 64)
    assert loaded is not None
    assert (loaded.head_kind, loaded.distance_weight) == (head, 0.25)
    x, y = coloured_images([0, 1], 0), coloured_images([1, 1], 1)
    with torch.no_grad():
        assert torch.allclose(loaded(x, y), model(x, y), atol=1e-6)
    with pytest.raises(EmbedlabError, match="trained on another extractor") as error:
        load_reranker(tmp_path, extractor_sha256="b" * 64)
    assert "\n" not in str(error.value)


def test_validate_refuses_a_reranker_of_another_extractor(tmp_path: Path) -> None:
    (tmp_path / MODELS_DIR).mkdir()
    (tmp_path / MODELS_DIR / "extractor.safetensors").write_bytes(b"the extractor in use")
    save_reranker(small_model(hidden=8), tmp_path / RERANKER_DIR, extractor_sha256="c" * 64)
    params = parse_params({"rerank": {"enabled": True}})
    with pytest.raises(EmbedlabError, match=r"another extractor.*dvc repro rerank"):
        validation_reranker(params, tmp_path, dataset=None)  # type: ignore[arg-type]
    off = parse_params({})
    assert validation_reranker(off, tmp_path, dataset=None) is None  # type: ignore[arg-type]


def test_distance_weight_one_keeps_the_plain_order_and_zero_the_models() -> None:
    generator = torch.Generator().manual_seed(5)
    distances = torch.rand(20, 8, generator=generator).sort(dim=1).values
    retrieved = torch.randperm(160, generator=generator).view(20, 8)
    scores = torch.rand(20, 5, generator=generator)
    _, plain_order = rerank_top_n(distances, retrieved, scores, distance_weight=1.0)
    assert torch.equal(plain_order, retrieved)
    _, model_order = rerank_top_n(distances, retrieved, scores, distance_weight=0.0)
    expected = torch.gather(retrieved[:, :5], 1, scores.argsort(dim=1))
    assert torch.equal(model_order[:, :5], expected)


def test_a_distance_weight_outside_0_1_is_refused() -> None:
    with pytest.raises(EmbedlabError, match="distance_weight must be in"):
        PairwiseReranker(small_model(), lambda p: p, top_n=3, distance_weight=1.5)


def test_stacked_head_starts_from_the_extractor_and_is_symmetric() -> None:
    torch.manual_seed(0)
    extractor = TimmExtractor("resnet10t", input_size=SIDE).eval()
    model = build_pairwise_model(extractor, "stacked", hidden=8).eval()
    first = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 6  # both images as one input
    x = coloured_images([0, 1, 2], seed=2)
    with torch.no_grad():  # one image twice: the extractor's own features
        assert torch.allclose(model.backbone(torch.cat([x, x], 1)), extractor(x), atol=1e-5)
        assert torch.allclose(model(x, x.flip(0)), model(x.flip(0), x), atol=1e-6)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.in_channels == 6
               for m in extractor.modules()) == 0  # fmt: skip  # the extractor is unchanged


def test_an_unknown_head_is_refused_in_one_line() -> None:
    with pytest.raises(EmbedlabError, match=r"rerank\.head: expected one of") as error:
        build_pairwise_model(TimmExtractor("resnet10t", input_size=SIDE), "siamese", 4)
    assert "\n" not in str(error.value)
