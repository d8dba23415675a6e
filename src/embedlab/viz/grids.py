"""Retrieval image grids: a query, its nearest gallery items and the ground truths it missed.

Each row: the query (blue frame), its top-k gallery items (green frame when relevant,
red when not, distance printed under each) and, after a gap, up to a few relevant
gallery items that did not make the top k (grey frame). With a verification threshold,
retrieved items at or beyond it are *no match*: light-grey frame, faded image and the
caption ``no match <distance>``. PIL only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageDraw, ImageFont

from embedlab.errors import EmbedlabError
from embedlab.retrieval.results import RetrievalResults

__all__ = [
    "BACKGROUND_COLOR",
    "CORRECT_COLOR",
    "MISSED_COLOR",
    "NO_MATCH_COLOR",
    "QUERY_COLOR",
    "WRONG_COLOR",
    "GridRow",
    "build_grid_rows",
    "draw_retrieval_grid",
    "frame_width",
    "render_validation_images",
    "select_worst_queries",
    "tile_box",
]

RGB = tuple[int, int, int]

QUERY_COLOR: RGB = (0, 90, 255)
CORRECT_COLOR: RGB = (0, 170, 0)
WRONG_COLOR: RGB = (220, 0, 0)
MISSED_COLOR: RGB = (128, 128, 128)
NO_MATCH_COLOR: RGB = (200, 200, 200)
NO_MATCH_FADE = 0.6
"""Share of white blended into a no-match item's image."""
BACKGROUND_COLOR: RGB = (255, 255, 255)
TEXT_COLOR: RGB = (0, 0, 0)

#: Space between tiles, height of the caption under a tile, gap before missed items.
PAD = 4
CAPTION_HEIGHT = 14
MISSED_GAP = 16


@dataclass
class GridRow:
    """One query's row: the query, its retrieved items and some missed ground truths."""

    query: Image.Image
    retrieved: list[Image.Image]
    distances: list[float]
    relevant: list[bool]
    missed: list[Image.Image] = field(default_factory=list)
    missed_distances: list[float] = field(default_factory=list)
    matched: list[bool] | None = None
    """Per retrieved item, whether it is below the verification threshold (None: no threshold)."""

    def __post_init__(self) -> None:
        if self.matched is not None and len(self.matched) != len(self.retrieved):
            raise EmbedlabError(
                f"GridRow: matched has {len(self.matched)} entries for "
                f"{len(self.retrieved)} retrieved items"
            )
        if not len(self.retrieved) == len(self.distances) == len(self.relevant):
            raise EmbedlabError(
                f"GridRow: retrieved, distances and relevant must have one entry per item, got "
                f"{len(self.retrieved)}, {len(self.distances)} and {len(self.relevant)}"
            )
        if self.missed_distances and len(self.missed_distances) != len(self.missed):
            raise EmbedlabError(
                f"GridRow: missed_distances has {len(self.missed_distances)} entries for "
                f"{len(self.missed)} missed items"
            )


def frame_width(cell: int) -> int:
    """Frame thickness in pixels for a tile of ``cell`` pixels.

    Example:
        >>> frame_width(96)
        4
    """
    return max(2, cell // 24)


def tile_box(
    row: int, column: int, n_retrieved_columns: int, cell: int = 96
) -> tuple[int, int, int, int]:
    """Pixel box ``(left, top, right, bottom)`` (right/bottom exclusive) of one tile.

    Column 0 is the query, columns ``1..n_retrieved_columns`` the retrieved items, the
    following ones the missed ground truths (shifted right by a gap).

    Example:
        >>> tile_box(0, 0, 5)
        (4, 4, 100, 100)
        >>> tile_box(1, 6, 5)
        (620, 118, 716, 214)
    """
    left = PAD + column * (cell + PAD)
    if column > n_retrieved_columns:
        left += MISSED_GAP
    top = PAD + row * (cell + CAPTION_HEIGHT + PAD)
    return left, top, left + cell, top + cell


def draw_retrieval_grid(rows: Sequence[GridRow], cell: int = 96) -> Image.Image:
    """Draw the rows as one RGB image (see the module docstring for the layout).

    Example:
        >>> red, grey = Image.new("RGB", (40, 20), "red"), Image.new("L", (10, 10), 128)
        >>> row = GridRow(red, [grey, red], [0.25, 1.5], [True, False], missed=[grey])
        >>> grid = draw_retrieval_grid([row], cell=48)
        >>> grid.size
        (228, 70)
        >>> grid.getpixel(tile_box(0, 1, 2, cell=48)[:2]) == CORRECT_COLOR
        True
        >>> row.matched = [True, False]  # the second item is beyond the threshold
        >>> draw_retrieval_grid([row], cell=48).getpixel(tile_box(0, 2, 2, cell=48)[:2])
        (200, 200, 200)
    """
    if not rows:
        raise EmbedlabError("draw_retrieval_grid: no rows to draw")
    if cell < 16:
        raise EmbedlabError(f"draw_retrieval_grid: cell must be >= 16 pixels, got {cell}")
    n_retrieved = max(len(r.retrieved) for r in rows)
    n_missed = max(len(r.missed) for r in rows)
    last_column = n_retrieved + n_missed
    width = tile_box(0, last_column, n_retrieved, cell)[2] + PAD
    height = tile_box(len(rows) - 1, 0, n_retrieved, cell)[3] + CAPTION_HEIGHT + PAD
    canvas = Image.new("RGB", (width, height), BACKGROUND_COLOR)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row_number, row in enumerate(rows):
        tiles: list[tuple[Image.Image, RGB, str]] = [(row.query, QUERY_COLOR, "query")]
        matched = row.matched if row.matched is not None else [True] * len(row.retrieved)
        for image, distance, relevant, match in zip(
            row.retrieved, row.distances, row.relevant, matched, strict=True
        ):
            if not match:
                faded = Image.blend(image.convert("RGB"), Image.new("RGB", image.size, "white"),
                                    NO_MATCH_FADE)  # fmt: skip
                tiles.append((faded, NO_MATCH_COLOR, f"no match {distance:.3f}"))
                continue
            tiles.append((image, CORRECT_COLOR if relevant else WRONG_COLOR, f"{distance:.3f}"))
        for column, (image, color, caption) in enumerate(tiles):
            _draw_tile(
                canvas,
                draw,
                font,
                tile_box(row_number, column, n_retrieved, cell),
                image,
                color,
                caption,
            )
        for offset, image in enumerate(row.missed):
            caption = f"GT {row.missed_distances[offset]:.3f}" if row.missed_distances else "GT"
            box = tile_box(row_number, n_retrieved + 1 + offset, n_retrieved, cell)
            _draw_tile(canvas, draw, font, box, image, MISSED_COLOR, caption)
    return canvas


def _draw_tile(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    box: tuple[int, int, int, int],
    image: Image.Image,
    color: RGB,
    caption: str,
) -> None:
    left, top, right, bottom = box
    cell = right - left
    frame = frame_width(cell)
    inner = cell - 2 * frame
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((inner, inner))
    if thumbnail.width < inner and thumbnail.height < inner:
        scale = inner / max(thumbnail.width, thumbnail.height)
        size = (max(1, round(thumbnail.width * scale)), max(1, round(thumbnail.height * scale)))
        thumbnail = thumbnail.resize(size, Image.Resampling.NEAREST)
    draw.rectangle((left, top, right - 1, bottom - 1), fill=color)
    draw.rectangle(
        (left + frame, top + frame, right - 1 - frame, bottom - 1 - frame), fill=BACKGROUND_COLOR
    )
    canvas.paste(
        thumbnail,
        (
            left + frame + (inner - thumbnail.width) // 2,
            top + frame + (inner - thumbnail.height) // 2,
        ),
    )
    if caption:
        text_width = draw.textlength(caption, font=font)
        draw.text((left + (cell - text_width) / 2, bottom + 1), caption, fill=TEXT_COLOR, font=font)


def _example_results() -> RetrievalResults:
    """Four 1-d points, two labels: the results the examples below draw."""
    from embedlab.retrieval import QueryGallery, retrieve

    x = torch.tensor([[0.0], [1.0], [1.5], [3.0]])
    return retrieve(QueryGallery.from_columns(x, [0, 0, 1, 1]), k=2)


def select_worst_queries(results: RetrievalResults, values: torch.Tensor, n: int = 5) -> list[int]:
    """Query numbers (positions among the queries) of the ``n`` worst valid queries.

    ``values`` holds one per-query metric value per *valid* query, in query order (what
    :meth:`~embedlab.metrics.table.MetricTable.per_query_values` returns). Worst first;
    equal values keep query order; queries with no relevant gallery item are never chosen.

    Example:
        >>> results = _example_results()
        >>> select_worst_queries(results, torch.tensor([1.0, 0.5, 0.0, 1.0]), n=2)
        [2, 1]
    """
    valid_numbers = torch.nonzero(results.valid_queries).squeeze(1)
    if values.shape != valid_numbers.shape:
        raise EmbedlabError(
            f"select_worst_queries: {tuple(values.shape)} values for {len(valid_numbers)} "
            "valid queries"
        )
    order = torch.sort(values, stable=True).indices
    return valid_numbers[order[:n]].tolist()


def build_grid_rows(
    results: RetrievalResults,
    query_numbers: Sequence[int],
    load_image: Callable[[int], Image.Image],
    top_k: int = 5,
    n_missed: int = 2,
) -> list[GridRow]:
    """Rows for `draw_retrieval_grid` from the retrieval results.

    Args:
        results: the ranking to draw.
        query_numbers: positions among the queries (not rows of the data).
        load_image: image of a row of the query/gallery value (a position).
        top_k: retrieved items per row (at most the results' width).
        n_missed: relevant items outside the top k to show, nearest first.

    Example:
        >>> rows = build_grid_rows(_example_results(), [2], lambda p: Image.new("RGB", (8, 8)))
        >>> rows[0].distances, rows[0].relevant, rows[0].missed_distances
        ([0.5, 1.5], [False, False], [1.5])
    """
    rows = []
    for number in query_numbers:
        if not 0 <= number < len(results):
            raise EmbedlabError(f"query number {number} is out of range [0, {len(results)})")
        found = results.retrieved[number, :top_k] >= 0
        positions = results.retrieved[number, :top_k][found].tolist()
        distances = results.distances[number, :top_k][found].tolist()
        relevant = results.relevance[number, :top_k][found].tolist()
        missed_positions, missed_distances = results.relevant_gallery(number)
        shown = set(positions)
        not_shown = [i for i, p in enumerate(missed_positions.tolist()) if p not in shown][
            :n_missed
        ]
        rows.append(
            GridRow(
                query=load_image(int(results.query_positions[number])),
                retrieved=[load_image(p) for p in positions],
                distances=distances,
                relevant=relevant,
                missed=[load_image(int(missed_positions[i])) for i in not_shown],
                missed_distances=[float(missed_distances[i]) for i in not_shown],
            )
        )
    return rows


def render_validation_images(
    results: RetrievalResults,
    load_image: Callable[[int], Image.Image],
    worst_values: torch.Tensor | None = None,
    n_queries: int = 5,
    n_worst: int = 5,
    top_k: int = 5,
    queries: Sequence[int] | None = None,
) -> dict[str, Image.Image]:
    """The validation pictures: ``{"predictions": ..., "worst_queries": ...}``.

    ``predictions`` shows the given ``queries`` (query numbers, i.e. positions among the
    queries) or else the first ``n_queries`` valid queries (deterministic across
    epochs, so the images are comparable); ``worst_queries`` the ``n_worst`` lowest by
    ``worst_values`` (see `select_worst_queries`; None: no such grid). A grid with
    nothing to show (no valid query, or ``n == 0``) is omitted.

    Example:
        >>> blank = lambda position: Image.new("RGB", (8, 8))
        >>> images = render_validation_images(_example_results(), blank,
        ...                                   worst_values=torch.tensor([1.0, 0.5, 0.0, 1.0]))
        >>> {name: image.size for name, image in images.items()}
        {'predictions': (420, 460), 'worst_queries': (420, 460)}
    """
    images: dict[str, Image.Image] = {}
    valid_numbers = torch.nonzero(results.valid_queries).squeeze(1).tolist()
    valid = set(valid_numbers)
    first = [q for q in queries if q in valid] if queries else valid_numbers[:n_queries]
    if first:
        images["predictions"] = draw_retrieval_grid(
            build_grid_rows(results, first, load_image, top_k)
        )
    worst = (
        select_worst_queries(results, worst_values, n_worst)
        if n_worst > 0 and worst_values is not None
        else []
    )
    if worst:
        images["worst_queries"] = draw_retrieval_grid(
            build_grid_rows(results, worst, load_image, top_k)
        )
    return images
