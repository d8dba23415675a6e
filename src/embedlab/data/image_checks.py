"""Cheap checks of image files: size from the header, end marker, no pixel decoding.

Each file is opened once and its header read for the size, and its last bytes are
checked for the end marker of its format, so truncated files are caught at prepare
time rather than mid-training. PNG, JPEG and GIF headers are parsed here; other
formats go through PIL's lazy ``Image.open``. ``tests/benchmarks/bench_manifest.py``
measures this parser against PIL's lazy open on the same files.
"""

from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np

ImageCheck = Literal["exists", "header", "decode"]
"""How hard each image is looked at: the file exists; its header parses (size known, end
marker present); or the whole image decodes."""
IMAGE_CHECKS: tuple[str, ...] = ("exists", "header", "decode")

DEFAULT_PIXEL_LIMIT = 89_478_485
"""PIL's own default ``Image.MAX_IMAGE_PIXELS`` (a decompression-bomb guard)."""
PIXEL_LIMIT_PARAM = "prepare.max_image_pixels"


def set_pixel_limit(pixels: int) -> None:
    """Refuse images of more than ``pixels`` pixels, at the header check and at decoding.

    >>> set_pixel_limit(100); pixel_limit()
    100
    >>> set_pixel_limit(DEFAULT_PIXEL_LIMIT)
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = int(pixels)


def pixel_limit() -> int:
    """The pixel limit in force (PIL's ``Image.MAX_IMAGE_PIXELS``)."""
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS or 0) or DEFAULT_PIXEL_LIMIT


class _Unreadable(Exception):
    """Internal: why an image file cannot be used (becomes part of a ManifestError)."""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_HEAD = 4096
_TAIL = 64


def _jpeg_size(fd: int, head: bytes) -> tuple[int, int] | None:
    """Walk the JPEG segments up to the first start-of-frame; None if it is not found.

    ``head`` holds the file's first bytes; segments beyond it are read with ``pread``.
    """
    data, base, pos = head, 0, 2  # data holds the file's bytes from offset ``base``
    while True:
        if pos + 9 > base + len(data):  # marker, length and frame header not in ``data``
            data, base = os.pread(fd, _HEAD, pos), pos
            if len(data) < 4:
                return None
        i = pos - base
        if data[i] != 0xFF:
            return None  # not at a marker: corrupt segment stream
        code = data[i + 1]
        if code == 0xFF:  # fill byte before a marker
            pos += 1
        elif code == 0xD8 or 0xD0 <= code <= 0xD7 or code == 0x01:
            pos += 2  # markers without a length
        elif code in (0xD9, 0xDA):
            return None  # end of image / start of scan before any frame header
        elif code in _JPEG_SOF:
            if len(data) < i + 9:
                return None
            height, width = struct.unpack_from(">HH", data, i + 5)
            return width, height
        else:
            pos += 2 + struct.unpack_from(">H", data, i + 2)[0]


def _pil_size(path: str, decode: bool) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if decode:
                image.load()  # a truncated file fails here
            return image.size
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Unreadable(f"cannot decode: {reason}") from None


def image_size(path: str, decode: bool = False) -> tuple[int, int]:
    """Width and height of an image file, from its header; no pixel decoding.

    PNG, JPEG and GIF headers are parsed directly and the file's tail is checked for the
    format's end marker; a file without it is fully decoded to tell a truncated file from
    harmless trailing bytes. Other formats go through PIL's lazy ``Image.open``. With
    ``decode=True`` every image is fully decoded. Raises ``FileNotFoundError`` for a
    missing file and ``ValueError`` (with the reason) for an unreadable one.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> p = str(pathlib.Path(tempfile.mkdtemp()) / "a.jpg")
    >>> Image.new("RGB", (7, 5)).save(p)
    >>> image_size(p)
    (7, 5)
    >>> _ = pathlib.Path(p).write_bytes(pathlib.Path(p).read_bytes()[:200])  # truncate it
    >>> try:
    ...     image_size(p)
    ... except ValueError as exc:
    ...     print(str(exc).startswith("cannot decode"), "truncated" in str(exc).lower())
    True True
    """
    try:
        return _image_size(path, decode)
    except _Unreadable as exc:
        raise ValueError(str(exc)) from None


def _image_size(path: str, decode: bool) -> tuple[int, int]:
    # os.open/pread instead of open(): no buffered-reader objects, one read for small files.
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.pread(fd, _HEAD, 0)
        if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR":
            size = struct.unpack(">II", head[16:24])
            end = _PNG_END
        elif head.startswith(b"\xff\xd8"):
            size = _jpeg_size(fd, head)
            end = b"\xff\xd9"
        elif head[:6] in (b"GIF87a", b"GIF89a"):
            size = struct.unpack("<HH", head[6:10])
            end = b"\x3b"
        elif not head:
            raise _Unreadable("empty file")
        else:
            size, end = None, None
        complete = False
        if size is not None and end is not None:
            if len(head) < _HEAD:
                tail = head[-_TAIL:]  # the whole file is in ``head``
            else:
                tail = os.pread(fd, _TAIL, max(0, os.fstat(fd).st_size - _TAIL))
            complete = tail.rstrip(b"\x00\r\n ").endswith(end)
    finally:
        os.close(fd)
    if end is None:  # a format we do not parse: PIL reads its header (or all of it)
        size = _pil_size(path, decode=decode)
    elif decode or not complete:  # no frame header or no end marker: decode to be sure
        size = _pil_size(path, decode=True)
    if size[0] <= 0 or size[1] <= 0:
        raise _Unreadable(f"image has no pixels ({size[0]}x{size[1]})")
    return int(size[0]), int(size[1])


def probe_images(
    paths: list[str], check: ImageCheck
) -> tuple[np.ndarray, list[int], dict[int, str]]:
    """Sizes (n, 2; -1 when unknown), missing positions and unreadable positions -> reason.

    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (8, 6)).save(root / "a.png")
    >>> _ = (root / "b.png").write_bytes(b"not an image")
    >>> paths = [str(root / name) for name in ("a.png", "b.png", "c.png")]
    >>> sizes, missing, unreadable = probe_images(paths, "header")
    >>> sizes[0].tolist(), missing, list(unreadable)
    ([8, 6], [2], [1])
    """
    sizes = np.full((len(paths), 2), -1, dtype=np.int64)
    if check == "exists":
        isfile = os.path.isfile
        return sizes, [i for i, p in enumerate(paths) if not isfile(p)], {}
    decode = check == "decode"

    def run(start: int, stop: int) -> tuple[list[int], dict[int, str]]:
        missing: list[int] = []
        unreadable: dict[int, str] = {}
        for i in range(start, stop):
            try:
                sizes[i] = _image_size(paths[i], decode)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                missing.append(i)
            except _Unreadable as exc:
                unreadable[i] = str(exc)
            except OSError as exc:  # permissions, I/O errors
                unreadable[i] = exc.strerror or type(exc).__name__
        return missing, unreadable

    # Opening files releases the GIL: threads hide file-system latency (network
    # storage, cold caches); header parsing itself is a few microseconds per file.
    chunk = 4096
    bounds = [(s, min(s + chunk, len(paths))) for s in range(0, len(paths), chunk)]
    workers = min(8, len(bounds))
    if workers <= 1:
        results = [run(s, e) for s, e in bounds]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda b: run(*b), bounds))
    missing = [i for part, _ in results for i in part]
    unreadable = {i: why for _, part in results for i, why in part.items()}
    return sizes, missing, unreadable
