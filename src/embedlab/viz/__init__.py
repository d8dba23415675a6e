"""Retrieval image grids: predictions and worst queries."""

from embedlab.viz.grids import (
    CORRECT_COLOR,
    MISSED_COLOR,
    NO_MATCH_COLOR,
    QUERY_COLOR,
    WRONG_COLOR,
    GridRow,
    build_grid_rows,
    draw_retrieval_grid,
    render_validation_images,
    select_worst_queries,
    tile_box,
)

__all__ = [
    "CORRECT_COLOR",
    "MISSED_COLOR",
    "NO_MATCH_COLOR",
    "QUERY_COLOR",
    "WRONG_COLOR",
    "GridRow",
    "build_grid_rows",
    "draw_retrieval_grid",
    "render_validation_images",
    "select_worst_queries",
    "tile_box",
]
