"""Retrieval grids: layout, frame colours read back from pixels, and query selection."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from embedlab.errors import EmbedlabError
from embedlab.metrics import EmbeddingMetrics
from embedlab.viz import (
    CORRECT_COLOR,
    MISSED_COLOR,
    QUERY_COLOR,
    WRONG_COLOR,
    GridRow,
    build_grid_rows,
    draw_retrieval_grid,
    render_validation_images,
    select_worst_queries,
    tile_box,
)
from embedlab.viz.grids import BACKGROUND_COLOR, CAPTION_HEIGHT, MISSED_GAP, PAD


def colour_of(position: int) -> tuple[int, int, int]:
    return (10 + 40 * position, 200 - 30 * position, 77)


def load_image(position: int) -> Image.Image:
    """A solid image whose colour encodes its row, so tiles can be identified by pixel."""
    return Image.new("RGB", (30, 20), colour_of(position))


def frame_pixel(
    grid: Image.Image, row: int, column: int, n_retrieved: int, cell: int = 96
) -> tuple:
    left, top, _, _ = tile_box(row, column, n_retrieved, cell)
    return grid.getpixel((left + 1, top + 1))


def centre_pixel(
    grid: Image.Image, row: int, column: int, n_retrieved: int, cell: int = 96
) -> tuple:
    left, top, right, bottom = tile_box(row, column, n_retrieved, cell)
    return grid.getpixel(((left + right) // 2, (top + bottom) // 2))


@pytest.fixture
def tiny_metric() -> EmbeddingMetrics:
    # x: 0 1 2 4 10 7 ; labels 0 0 1 0 1 2 ; item 3 is gallery only.
    metric = EmbeddingMetrics(
        cmc_top_k=(1, 2), precision_top_k=(2,), map_top_k=(2,), extra_keys=("paths",)
    )
    metric.update_data(
        {
            "embeddings": torch.tensor([[0.0], [1.0], [2.0], [4.0], [10.0], [7.0]]),
            "labels": torch.tensor([0, 0, 1, 0, 1, 2]),
            "is_query": torch.tensor([True, True, True, False, True, True]),
            "is_gallery": torch.ones(6, dtype=torch.bool),
            "paths": [f"{i}.png" for i in range(6)],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric.compute_metrics()
    return metric


def test_grid_size_and_frame_colours_at_known_positions() -> None:
    rows = [
        GridRow(
            query=load_image(0),
            retrieved=[load_image(i) for i in (1, 2, 3, 4, 5)],
            distances=[0.1, 0.2, 0.3, 0.4, 0.5],
            relevant=[True, False, True, False, False],
            missed=[load_image(6), load_image(7)],
            missed_distances=[0.9, 1.2],
        ),
        GridRow(
            query=Image.new("L", (50, 90), 30),
            retrieved=[load_image(1)],
            distances=[2.0],
            relevant=[False],
        ),
    ]
    grid = draw_retrieval_grid(rows, cell=96)
    assert grid.mode == "RGB"
    assert grid.size == (PAD + 8 * (96 + PAD) + MISSED_GAP, PAD + 2 * (96 + CAPTION_HEIGHT + PAD))
    assert frame_pixel(grid, 0, 0, 5) == QUERY_COLOR
    expected = [CORRECT_COLOR, WRONG_COLOR, CORRECT_COLOR, WRONG_COLOR, WRONG_COLOR]
    assert [frame_pixel(grid, 0, c, 5) for c in range(1, 6)] == expected
    assert [frame_pixel(grid, 0, c, 5) for c in (6, 7)] == [MISSED_COLOR, MISSED_COLOR]
    assert [centre_pixel(grid, 0, c, 5) for c in range(6)] == [colour_of(i) for i in range(6)]
    assert frame_pixel(grid, 1, 0, 5) == QUERY_COLOR
    assert frame_pixel(grid, 1, 1, 5) == WRONG_COLOR
    assert frame_pixel(grid, 1, 2, 5) == BACKGROUND_COLOR  # shorter row: nothing drawn


def ink(image: Image.Image) -> np.ndarray:
    """The text pixels of a caption (far from the background), cropped to their bounding box."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    mask = np.abs(pixels - np.array(BACKGROUND_COLOR)).sum(axis=-1) > 200
    rows, columns = np.nonzero(mask)
    assert rows.size, "no text drawn"
    return mask[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]


def rendered(text: str) -> np.ndarray:
    """``text`` as PIL's default font draws it on its own: what a reader would see."""
    canvas = Image.new("RGB", (240, 40), BACKGROUND_COLOR)
    ImageDraw.Draw(canvas).text((10, 10), text, fill=(0, 0, 0), font=ImageFont.load_default())
    return ink(canvas)


def differing_pixels(caption: np.ndarray, text: str) -> int:
    """How many text pixels differ from ``text`` drawn alone (all of them if sizes differ)."""
    expected = rendered(text)
    if caption.shape != expected.shape:
        return max(caption.size, expected.size)
    return int((caption != expected).sum())


@pytest.mark.parametrize("cell", [64, 97])  # an odd cell: half-pixel text placement
def test_each_caption_reads_as_its_distance(cell: int) -> None:
    """The text under every tile is its distance with 3 decimals (``GT`` for missed ones):
    the caption's ink is the string drawn on its own (up to a pixel or two of sub-pixel
    placement), and far from a string one digit off."""
    row = GridRow(
        load_image(0),
        [load_image(1), load_image(2)],
        [0.123, 7.5],
        [True, False],
        missed=[load_image(3)],
        missed_distances=[1.25],
    )
    grid = draw_retrieval_grid([row], cell=cell)
    expected = {0: "query", 1: "0.123", 2: "7.500", 3: "GT 1.250"}
    wrong = {0: "quety", 1: "0.128", 2: "7.600", 3: "GT 1.260"}
    for column, text in expected.items():
        left, _, right, bottom = tile_box(0, column, 2, cell=cell)
        caption = ink(grid.crop((left, bottom, right, bottom + CAPTION_HEIGHT)))
        assert differing_pixels(caption, text) <= 2, text
        assert differing_pixels(caption, wrong[column]) >= 6, wrong[column]


def test_grid_rejects_inconsistent_rows_and_empty_input() -> None:
    with pytest.raises(EmbedlabError, match="one entry per item"):
        GridRow(load_image(0), [load_image(1)], [0.1, 0.2], [True])
    with pytest.raises(EmbedlabError, match="no rows"):
        draw_retrieval_grid([])


def test_select_worst_queries_is_worst_first_with_ties_in_query_order(
    tiny_metric: EmbeddingMetrics,
) -> None:
    # valid queries 0..3 have map@2 = [1, 1, 0, 0]; query 4 has no relevant item.
    results, table = tiny_metric.results, tiny_metric.table
    assert select_worst_queries(results, table.per_query_values("map@2"), n=10) == [2, 3, 0, 1]
    assert select_worst_queries(results, table.per_query_values("cmc@1"), n=1) == [2]
    with pytest.raises(EmbedlabError, match=r"'map@5' \(computed: cmc@1, cmc@2"):
        table.per_query_values("map@5")


def test_build_grid_rows_shows_retrieved_items_and_missed_ground_truths(
    tiny_metric: EmbeddingMetrics,
) -> None:
    first, third = build_grid_rows(tiny_metric.results, [0, 2], load_image, top_k=2, n_missed=2)
    # query 0 (x=0, label 0): retrieves 1 (relevant) and 2; item 3 is the missed ground truth.
    assert first.query.getpixel((0, 0)) == colour_of(0)
    assert [im.getpixel((0, 0)) for im in first.retrieved] == [colour_of(1), colour_of(2)]
    assert first.relevant == [True, False] and first.distances == [1.0, 2.0]
    assert [im.getpixel((0, 0)) for im in first.missed] == [colour_of(3)]
    assert first.missed_distances == [4.0]
    # query 2 (x=2, label 1): retrieves 1 and 0 (tie at distance 2 goes to index 0), misses 4.
    assert [im.getpixel((0, 0)) for im in third.retrieved] == [colour_of(1), colour_of(0)]
    assert third.relevant == [False, False]
    assert [im.getpixel((0, 0)) for im in third.missed] == [colour_of(4)]


def test_render_validation_images_draws_predictions_and_worst_queries(
    tiny_metric: EmbeddingMetrics,
) -> None:
    loaded = []

    def load_by_path(position: int) -> Image.Image:
        loaded.append(tiny_metric.extra["paths"][position])
        return load_image(position)

    worst_values = tiny_metric.table.per_query_values("map@2")
    images = render_validation_images(
        tiny_metric.results, load_by_path, worst_values, n_queries=5, n_worst=2, top_k=2
    )
    assert set(images) == {"predictions", "worst_queries"}
    assert "3.png" in loaded
    predictions, worst = images["predictions"], images["worst_queries"]
    assert predictions.height == PAD + 4 * (96 + CAPTION_HEIGHT + PAD)  # 4 valid queries
    assert worst.height == PAD + 2 * (96 + CAPTION_HEIGHT + PAD)
    # worst row 0 is query 2: both retrieved items wrong, one missed ground truth.
    assert [frame_pixel(worst, 0, c, 2) for c in range(4)] == [
        QUERY_COLOR,
        WRONG_COLOR,
        WRONG_COLOR,
        MISSED_COLOR,
    ]
    assert [frame_pixel(predictions, 0, c, 2) for c in range(3)] == [
        QUERY_COLOR,
        CORRECT_COLOR,
        WRONG_COLOR,
    ]


def test_no_match_items_are_grey_faded_and_captioned() -> None:
    from embedlab.viz import NO_MATCH_COLOR
    from embedlab.viz.grids import NO_MATCH_FADE

    query, a, b = load_image(0), load_image(1), load_image(2)
    row = GridRow(query, [a, b], [0.2, 0.9], [True, True], matched=[True, False])
    grid = draw_retrieval_grid([row])
    assert frame_pixel(grid, 0, 1, 2) == CORRECT_COLOR  # below the threshold: as before
    assert frame_pixel(grid, 0, 2, 2) == NO_MATCH_COLOR
    faded = tuple(round(c * (1 - NO_MATCH_FADE) + 255 * NO_MATCH_FADE) for c in colour_of(2))
    assert all(abs(x - y) <= 1 for x, y in zip(centre_pixel(grid, 0, 2, 2), faded, strict=True))
    # the caption under the no-match tile ("no match 0.900") is wider than a bare distance's

    def inked_width(column: int) -> int:
        left, _, right, bottom = tile_box(0, column, 2)
        caption = np.asarray(grid.crop((left, bottom, right, bottom + CAPTION_HEIGHT)).convert("L"))
        return int(np.ptp(np.flatnonzero((caption < 128).any(axis=0))))

    assert inked_width(2) > 1.5 * inked_width(1)
    with pytest.raises(EmbedlabError, match="matched has 1 entries for 2 retrieved items"):
        GridRow(query, [a, b], [0.2, 0.9], [True, True], matched=[True])
