"""Draw a compare page's fixed (or broken) queries as a PNG, shot in headless Chromium.

    python docs/scripts/screenshot_compare.py PAGE OUT [--section fixed|broken] [--height PX]

PAGE is the ``compare.html`` that ``embedlab compare A B`` wrote. The shot shows the
page's top (runs, metric table, changed params) followed directly by one section's
queries: the other section is cut from a copy written next to PAGE (so the tiles'
relative paths still resolve), which is shot and then removed. docs/reranker-fixed.png
comes from::

    embedlab compare . reports/reranked --out /tmp/rr
    python docs/scripts/screenshot_compare.py /tmp/rr/compare.html docs/reranker-fixed.png
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from screenshot_tensorboard import shoot

SECTIONS = ("broken", "fixed")


def keep_one_section(html: str, section: str) -> str:
    """The page without the other section's heading and queries.

    >>> end = '<p class="note">Each query...'
    >>> page = f'<h1>a</h1><h2 id="broken">B</h2><p>b</p><h2 id="fixed">F</h2><p>f</p>{end}'
    >>> keep_one_section(page, "fixed")
    '<h1>a</h1><h2 id="fixed">F</h2><p>f</p><p class="note">Each query...'
    >>> keep_one_section(page, "broken")
    '<h1>a</h1><h2 id="broken">B</h2><p>b</p><p class="note">Each query...'
    """
    other = SECTIONS[1 - SECTIONS.index(section)]
    start = html.find(f'<h2 id="{other}">')
    if start < 0:
        raise SystemExit(f"error: the page has no '{other}' section: not a compare page")
    # A section runs to the next section heading or to the page's closing note.
    following = re.compile(r'<h2 id="(?:broken|fixed)">|<p class="note">Each query')
    end = following.search(html, start + 1)
    return html[:start] + (html[end.start() :] if end else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="compare.html written by embedlab compare")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--section", choices=SECTIONS, default="fixed")
    parser.add_argument("--height", type=int, default=1300, help="window height in pixels")
    args = parser.parse_args()
    if not args.page.is_file():
        raise SystemExit(f"error: {args.page}: no such compare page")
    trimmed = args.page.with_name(f".{args.section}-only.html")
    trimmed.write_text(keep_one_section(args.page.read_text(), args.section))
    try:
        shoot(trimmed.resolve().as_uri(), args.out.resolve(), size=f"1400,{args.height}")
    finally:
        trimmed.unlink()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
