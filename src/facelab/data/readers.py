"""Read faces from the user's files into uint8 arrays: Kaggle keypoint CSVs, FER2013 CSVs, image folders.

Layouts (see :mod:`facelab.formats`):

* keypoints: Kaggle ``training.csv`` -- 30 coordinate columns and ``Image`` (9216 space-separated
  0-255 values). Any file name, plain or gzip (told by its magic bytes, not its suffix); columns in
  any order; extra columns ignored; empty coordinate cells become NaN.
* emotion CSV: ``fer2013.csv`` (``emotion,pixels,Usage``), ``icml_face_data.csv`` (the same with
  spaces before the column names) or a file without ``Usage``.
* emotion image folders: ``<root>/<class>/*.png|jpg|jpeg`` or ``<root>/<split>/<class>/...`` with
  split folders ``train``/``val``/``test``; class folder names go through ``EMOTION_ALIASES``.

Every bad input raises :class:`~facelab.errors.FacelabError` with one line that names the file, the
1-based data row where there is one (row 1 is the first line after the header; blank lines are
skipped but still counted) and what is wrong. UTF-8 BOMs and CRLF line endings are accepted.

Speed. Pixel columns are most of these files (a real fer2013.csv is 290 MB of text), so they are
not parsed a row at a time. A reader thread reads and decompresses the file in 4 MB pieces (zlib
releases the GIL) while the caller's thread cuts each piece into lines and fields with numpy and
parses every pixel field in it at once: digits are found by byte arithmetic, each number is built
from the (at most three) digits before its end, and each row's count of numbers is checked from the
positions of those ends. All of it runs on reused cache-sized buffers: fresh memory costs more here
than the arithmetic. Plain (not gzip) files, which leave the second core idle, are parsed on two
threads. Only a row that fails a check (or holds something unusual, like a tab) is parsed again with
plain Python, which either accepts it or says exactly what is wrong. The small columns (labels,
coordinates, usage) are cut out of each line and read by pandas. Files with quoted fields go through
pandas' CSV parser first (slower, still vectorised). ``benchmarks/bench_loading.py`` measures it.
"""

from __future__ import annotations

import io
import itertools
import os
import queue
import re
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facelab.errors import located
from facelab.formats import (
    EMOTION_ALIASES,
    EMOTION_IMAGE_SIZE,
    FER_LABELS,
    FER_USAGE_TEST,
    FER_USAGE_TRAIN,
    FER_USAGE_VAL,
    KEYPOINT_COLUMNS,
    KEYPOINT_IMAGE_COLUMN,
    KEYPOINT_IMAGE_SIZE,
)

# --- constants ----------------------------------------------------------------------------------

FER_LABEL_COLUMN = "emotion"
FER_PIXEL_COLUMN = "pixels"
FER_USAGE_COLUMN = "Usage"
FER_USAGES: tuple[str, ...] = (FER_USAGE_TRAIN, FER_USAGE_VAL, FER_USAGE_TEST)

# A keypoint may lie this many pixels outside the 96x96 image (annotation noise at the border):
# coordinates must be inside [-KEYPOINT_MARGIN, 96 + KEYPOINT_MARGIN] = [-1, 97].
KEYPOINT_MARGIN = 1.0

# Image folders: the suffixes read (case-insensitive), and split folder name -> Usage value.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
SPLIT_FOLDERS: dict[str, str] = {
    "train": FER_USAGE_TRAIN,
    "training": FER_USAGE_TRAIN,
    "val": FER_USAGE_VAL,
    "valid": FER_USAGE_VAL,
    "validation": FER_USAGE_VAL,
    "test": FER_USAGE_TEST,
    "testing": FER_USAGE_TEST,
}
SPLIT_ORDER: tuple[str, ...] = FER_USAGES

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
READ_BYTES = 1 << 20  # compressed bytes fed to zlib at a time
BLOCK_BYTES = 4 << 20  # text handed to the parser at a time (its work buffers stay in cache)
QUEUE_BLOCKS = 4  # blocks the reader thread may run ahead of the parser
PARSE_THREADS = min(2, os.cpu_count() or 1)  # pixel-parsing threads for plain (not gzip) files
PARALLEL_MIN_BYTES = 256 << 10  # fields shorter than this in all are parsed on one thread

MAX_PIXEL = 255
_DIGIT_PAD = 4  # never-digit bytes kept before each scratch buffer
_SPACE = (ord(" ") - ord("0")) & 0xFF  # a space after "subtract '0'" in uint8 arithmetic
_SIGNED_INT = re.compile(rb"[+-]?[0-9]+")
_SHOWN_CHARS = 20  # how much of a bad value an error message quotes


# --- public API ---------------------------------------------------------------------------------


@dataclass
class KeypointData:
    images: np.ndarray  # uint8 (N, 96, 96)
    keypoints: np.ndarray  # float32 (N, 30), Kaggle column order, NaN where missing


@dataclass
class EmotionData:
    images: np.ndarray  # uint8 (N, H, W)
    labels: np.ndarray  # int64 FER label ids 0..6
    usage: np.ndarray | None  # object array of 'Training'/'PublicTest'/'PrivateTest', or None


def read_keypoints_csv(path) -> KeypointData:
    """Read a Kaggle ``training.csv``-layout file (plain or gzip) into images and keypoints."""
    path = _existing_file(path)
    size = KEYPOINT_IMAGE_SIZE
    table = _read_table(path, KEYPOINT_IMAGE_COLUMN, size * size, required=KEYPOINT_COLUMNS)
    coords = np.empty((table.count, len(KEYPOINT_COLUMNS)), np.float64)
    raw = np.empty((table.count, len(KEYPOINT_COLUMNS)), object)
    for k, name in enumerate(KEYPOINT_COLUMNS):
        column = table.others[name]
        raw[:, k] = column.to_numpy(object)
        coords[:, k] = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    present = pd.notna(raw)
    non_numeric = present & np.isnan(coords)
    with np.errstate(invalid="ignore"):
        outside = ~(np.isnan(coords) | ((coords >= -KEYPOINT_MARGIN) & (coords <= size + KEYPOINT_MARGIN)))
    bad = non_numeric | outside
    if bad.any():
        i, k = divmod(int(np.argmax(bad.ravel())), bad.shape[1])
        name, row = KEYPOINT_COLUMNS[k], int(table.rows[i])
        if non_numeric[i, k]:
            raise located(path, f"{name} is not a number: {_shown(raw[i, k])}", row)
        raise located(
            path,
            f"{name} = {coords[i, k]:g} is outside the {size}x{size} image "
            f"(allowed {-KEYPOINT_MARGIN:g} to {size + KEYPOINT_MARGIN:g})",
            row,
        )
    return KeypointData(table.pixels.reshape(-1, size, size), coords.astype(np.float32))


def read_fer_csv(path) -> EmotionData:
    """Read a ``fer2013.csv``-layout file (``emotion,pixels[,Usage]``, plain or gzip)."""
    path = _existing_file(path)
    size = EMOTION_IMAGE_SIZE
    table = _read_table(path, FER_PIXEL_COLUMN, size * size, required=(FER_LABEL_COLUMN,))
    labels = _fer_labels(path, table.others[FER_LABEL_COLUMN], table.rows)
    usage = None
    if FER_USAGE_COLUMN in table.others.columns:
        usage = _fer_usage(path, table.others[FER_USAGE_COLUMN], table.rows)
    return EmotionData(table.pixels.reshape(-1, size, size), labels, usage)


def read_fer_folder(path, image_size: int = EMOTION_IMAGE_SIZE) -> EmotionData:
    """Read ``<root>/<class>/*.png|jpg`` or ``<root>/<train|val|test>/<class>/...`` as grayscale faces.

    Images are resized to ``image_size`` x ``image_size`` (INTER_AREA) where they differ. With split
    folders, usage is Training / PublicTest (val) / PrivateTest (test); without, usage is None.
    """
    root = Path(path)
    if not root.is_dir():
        raise located(root, "is not a folder of emotion images")
    folders = _subfolders(root)
    if not folders:
        raise located(root, "has no class folders (expected <class>/ or train/<class>/ folders of images)")
    split_names = [f for f in folders if f.name.lower() in SPLIT_FOLDERS]
    if split_names and len(split_names) != len(folders):
        odd = next(f for f in folders if f.name.lower() not in SPLIT_FOLDERS)
        raise located(odd, "is neither a split folder (train/val/test) nor allowed beside them")
    if split_names:
        jobs: list[tuple[Path, int, str]] = []
        ordered = sorted(split_names, key=lambda f: (SPLIT_ORDER.index(SPLIT_FOLDERS[f.name.lower()]), f.name))
        for split in ordered:
            usage = SPLIT_FOLDERS[split.name.lower()]
            jobs += [(file, label, usage) for file, label in _class_images(split)]
    else:
        jobs = [(file, label, "") for file, label in _class_images(root)]
    if not jobs:
        raise located(root, f"holds no images ({'/'.join(IMAGE_SUFFIXES)}) in its class folders")
    images = np.empty((len(jobs), image_size, image_size), np.uint8)

    def load(i: int) -> None:
        images[i] = _read_image(jobs[i][0], image_size)

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        list(pool.map(load, range(len(jobs))))  # list() re-raises the first error
    labels = np.array([label for _, label, _ in jobs], np.int64)
    usage = np.array([u for _, _, u in jobs], object) if split_names else None
    return EmotionData(images, labels, usage)


def read_emotion_source(path, image_size: int = EMOTION_IMAGE_SIZE) -> EmotionData:
    """A FER CSV file (-> :func:`read_fer_csv`) or an image folder (-> :func:`read_fer_folder`).

    CSV faces are resized to ``image_size`` where it is not the file's 48.
    """
    path = Path(path)
    if path.is_dir():
        return read_fer_folder(path, image_size)
    data = read_fer_csv(path)
    if data.images.shape[1:] != (image_size, image_size):
        data.images = _resize_all(data.images, image_size)
    return data


def parse_pixel_strings(strings, expected: int, path, first_row: int = 1) -> np.ndarray:
    """Parse space-separated 0-255 strings (str, bytes or NaN) into uint8 ``(N, expected)``.

    Errors name ``path`` and the row, counting the first string as ``first_row``.
    """
    encoded = [
        s.encode("utf-8", "replace")
        if isinstance(s, str)
        else bytes(s)
        if isinstance(s, (bytes, bytearray, memoryview))
        else b""
        for s in strings
    ]
    if not encoded:
        return np.empty((0, expected), np.uint8)
    lengths = np.fromiter((len(s) for s in encoded), np.int64, len(encoded))
    starts = np.zeros(len(encoded), np.int64)
    np.cumsum(lengths[:-1] + 1, out=starts[1:])
    ends = starts + lengths
    text = b"\n".join(encoded)
    rows = np.arange(first_row, first_row + len(encoded), dtype=np.int64)
    with _Parser(PARSE_THREADS) as parser:
        return _parse_pixel_fields(text, starts, ends, expected, path, rows, "pixels", parser)


# --- reading the bytes --------------------------------------------------------------------------


def _existing_file(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise located(path, "file not found")
    if not path.is_file():
        raise located(path, "is not a file")
    return path


def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == GZIP_MAGIC
    except OSError:
        return False  # _file_chunks reports it


def _file_chunks(path: Path) -> Iterator[bytes]:
    """The file's text in chunks of at most BLOCK_BYTES, gunzipped when it starts with the gzip magic."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head != GZIP_MAGIC:
                while chunk := fh.read(BLOCK_BYTES):
                    yield chunk
                return
            yield from _gunzip(path, fh)
    except OSError as exc:
        raise located(path, f"cannot be read: {exc.strerror or exc}") from None


def _gunzip(path: Path, fh) -> Iterator[bytes]:
    """Decompress every gzip member of ``fh``; a cut-off or damaged stream raises a FacelabError."""
    inflater = zlib.decompressobj(wbits=31)
    pending = b""
    try:
        while True:
            if not pending:
                pending = fh.read(READ_BYTES)
                if not pending:
                    break
            out = inflater.decompress(pending, BLOCK_BYTES)
            pending = inflater.unconsumed_tail
            if out:
                yield out
            if inflater.eof:  # end of a member: another, padding or the end
                pending = inflater.unused_data + pending
                while len(pending) < len(GZIP_MAGIC) and (more := fh.read(READ_BYTES)):
                    pending += more
                if pending.startswith(GZIP_MAGIC):
                    inflater = zlib.decompressobj(wbits=31)
                    continue
                if pending.strip(b"\0") or fh.read().strip(b"\0"):
                    raise located(path, "corrupt gzip file: unexpected data after the compressed stream")
                return
        while not inflater.eof and (out := inflater.decompress(b"", BLOCK_BYTES)):
            yield out
    except zlib.error as exc:
        raise located(path, f"corrupt gzip file ({exc})") from None
    if not inflater.eof:
        raise located(path, "truncated gzip file: the compressed data ends early (incomplete download or copy?)")


_DONE = object()


class _ReadAhead:
    """Run an iterator in a daemon thread, up to QUEUE_BLOCKS items ahead of the consumer."""

    def __init__(self, items: Iterator[bytes]):
        self._queue: queue.Queue = queue.Queue(QUEUE_BLOCKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), daemon=True, name="facelab-read")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator[bytes]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _lines(chunks: Iterable[bytes]) -> Iterator[tuple[bytes, int, int]]:
    """Whole lines out of chunks, without copying the chunks: ``(data, lo, hi)`` where
    ``data[lo:hi]`` ends just after a newline (the file's last piece may not). A line cut between two
    chunks comes as a small piece of its own."""
    carry: list[bytes] = []
    for chunk in chunks:
        first = chunk.find(b"\n")
        if first < 0:
            carry.append(chunk)
            continue
        lo = 0
        if carry:
            joined = b"".join([*carry, chunk[: first + 1]])
            yield joined, 0, len(joined)
            lo = first + 1
        last = chunk.rfind(b"\n") + 1
        if last > lo:
            yield chunk, lo, last
        carry = [chunk[last:]] if last < len(chunk) else []
    if carry:
        joined = b"".join(carry)
        yield joined, 0, len(joined)


# --- the table reader ---------------------------------------------------------------------------


@dataclass
class _Table:
    pixels: np.ndarray  # uint8 (N, expected)
    others: pd.DataFrame  # every other column, as read (object dtype), N rows
    rows: np.ndarray  # int64 (N,) 1-based data row numbers for messages
    count: int


class _Quoted(Exception):
    """The file has quoted fields: the fast line cutter does not apply."""


def _read_table(path: Path, pixel_column: str, expected: int, required: Sequence[str]) -> _Table:
    # A gzip file keeps a core busy decompressing; a plain one leaves both to the parser.
    threads = 1 if _is_gzip(path) else PARSE_THREADS
    reader = _ReadAhead(_file_chunks(path))
    try:
        with _Parser(threads) as parser:
            return _scan_table(path, _lines(reader), pixel_column, expected, required, parser)
    except _Quoted:
        pass
    finally:
        reader.close()
    return _read_quoted_table(path, pixel_column, expected, required)


def _header(path: Path, blocks: Iterator[tuple[bytes, int, int]]) -> tuple[list[str], tuple[bytes, int, int]]:
    """The header's column names, and what is left of the first piece of lines."""
    data, lo, hi = next(blocks, (b"", 0, 0))
    if data.startswith(UTF8_BOM, lo):
        lo += len(UTF8_BOM)
    end = data.find(b"\n", lo, hi)
    end = hi if end < 0 else end
    line = data[lo:end].rstrip(b"\r")
    if not line.strip():
        if not data[end:hi].strip() and next(blocks, None) is None:
            raise located(path, "file is empty")
        raise located(path, "the header line (line 1) is empty")
    if b'"' in line:
        raise _Quoted
    names = [name.strip() for name in line.decode("utf-8", "replace").split(",")]
    if not any(names):
        raise located(path, "the header line (line 1) is empty")
    return names, (data, min(end + 1, hi), hi)


def _check_columns(path: Path, names: list[str], pixel_column: str, required: Sequence[str]) -> None:
    for name in (*required, pixel_column):
        if name not in names:
            found = ", ".join(n for n in names if n) or "none"
            shown = found if len(found) < 120 else found[:117] + "..."
            raise located(path, f"missing column '{name}' (columns found: {shown})")


def _scan_table(
    path: Path,
    blocks: Iterator[tuple[bytes, int, int]],
    pixel_column: str,
    expected: int,
    required: Sequence[str],
    parser: _Parser,
) -> _Table:
    names, rest = _header(path, blocks)
    _check_columns(path, names, pixel_column, required)
    ncols = len(names)
    j = names.index(pixel_column)
    other_names = [n for k, n in enumerate(names) if k != j]

    pixel_parts: list[np.ndarray] = []
    row_parts: list[np.ndarray] = []
    other_lines: list[bytes] = []
    next_row = 1
    for data, lo, hi in itertools.chain([rest], blocks):
        if lo >= hi:
            continue
        if data.find(b'"', lo, hi) >= 0:
            raise _Quoted
        buf = np.frombuffer(data, np.uint8)
        line_ends = np.flatnonzero(buf[lo:hi] == ord("\n"))
        line_ends += lo
        if data[hi - 1] != ord("\n"):
            line_ends = np.append(line_ends, hi)
        line_starts = np.empty_like(line_ends)
        line_starts[0] = lo
        line_starts[1:] = line_ends[:-1] + 1
        line_ends -= (line_ends > line_starts) & (buf[np.maximum(line_ends - 1, 0)] == ord("\r"))
        rows = np.arange(next_row, next_row + len(line_ends), dtype=np.int64)
        next_row += len(line_ends)
        keep = line_ends > line_starts  # blank lines are skipped (but counted)
        if not keep.all():
            line_starts, line_ends, rows = line_starts[keep], line_ends[keep], rows[keep]
        if not len(rows):
            continue
        commas = np.flatnonzero(buf[lo:hi] == ord(","))
        commas += lo
        first_comma = np.searchsorted(commas, line_starts)
        n_commas = np.searchsorted(commas, line_ends) - first_comma
        wrong = np.flatnonzero(n_commas != ncols - 1)
        wrong_row = None
        if len(wrong):  # parse the rows before it: they may fail first
            w = int(wrong[0])
            wrong_row, wrong_fields = int(rows[w]), int(n_commas[w]) + 1
            line_starts, line_ends, rows, first_comma = (a[:w] for a in (line_starts, line_ends, rows, first_comma))
        starts = line_starts if j == 0 else commas[first_comma + (j - 1)] + 1
        ends = line_ends if j == ncols - 1 else commas[first_comma + j]
        pixels = _parse_pixel_fields(data, starts, ends, expected, path, rows, pixel_column, parser)
        if wrong_row is not None:
            raise located(path, f"has {wrong_fields} fields, expected {ncols} as in the header", wrong_row)
        pixel_parts.append(pixels)
        row_parts.append(rows)
        if ncols > 1:
            ls, ps, pe, le = (a.tolist() for a in (line_starts, starts, ends, line_ends))
            if j == 0:
                other_lines += [data[e + 1 : f] for e, f in zip(pe, le)]
            else:
                other_lines += [data[a : b - 1] + data[c:d] for a, b, c, d in zip(ls, ps, pe, le)]
    if not row_parts:
        raise located(path, "has a header but no data rows")
    pixels = pixel_parts[0] if len(pixel_parts) == 1 else np.concatenate(pixel_parts)
    rows = np.concatenate(row_parts)
    others = _read_others(path, other_names, other_lines, len(rows))
    return _Table(pixels, others, rows, len(rows))


def _read_others(path: Path, names: list[str], lines: list[bytes], count: int) -> pd.DataFrame:
    """The non-pixel columns (one CSV line per row, no header) as an object-dtype frame."""
    if not names:
        return pd.DataFrame(index=range(count))
    text = b"\n".join(lines) + b"\n"
    frame = pd.read_csv(
        io.BytesIO(text), header=None, names=range(len(names)), dtype=object, skip_blank_lines=False, engine="c"
    )
    frame.columns = names
    frame = frame.loc[:, ~frame.columns.duplicated()]
    if len(frame) != count:  # a stray carriage return inside a line; never misalign labels and faces
        raise located(
            path,
            f"found {len(frame)} rows of {', '.join(names)} for {count} rows of pixels "
            "(a stray carriage return inside a line?)",
        )
    return frame


def _read_quoted_table(path: Path, pixel_column: str, expected: int, required: Sequence[str]) -> _Table:
    """Slower path for files with quoted fields: pandas' CSV parser, then the same pixel parser.

    Row numbers count parsed records here, so they drift from line numbers after blank lines.
    """
    text = b"".join(_file_chunks(path))
    if text.startswith(UTF8_BOM):
        text = text[len(UTF8_BOM) :]
    if not text.strip():
        raise located(path, "file is empty")
    try:
        frame = pd.read_csv(io.BytesIO(text), dtype=object, engine="c", skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        message = " ".join(str(exc).split())
        raise located(path, f"cannot be read as CSV: {message}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    _check_columns(path, list(frame.columns), pixel_column, required)
    if not len(frame):
        raise located(path, "has a header but no data rows")
    frame = frame.loc[:, ~frame.columns.duplicated()]
    rows = np.arange(1, len(frame) + 1, dtype=np.int64)
    strings = frame[pixel_column].tolist()
    pixels = parse_pixel_strings(strings, expected, path)
    others = frame.drop(columns=[pixel_column]).reset_index(drop=True)
    return _Table(pixels, others, rows, len(frame))


# --- the pixel parser ---------------------------------------------------------------------------


class _Scratch:
    """Work buffers reused from block to block (fresh memory costs more than the arithmetic)."""

    def __init__(self) -> None:
        self.size = -1

    def ensure(self, n: int) -> None:
        if n <= self.size:
            return
        size = max(n, BLOCK_BYTES + (BLOCK_BYTES >> 2))
        pad = _DIGIT_PAD
        self.v = np.zeros(pad + size, np.uint8)  # byte - '0', digits kept, rest zeroed later
        self.d = np.zeros(pad + size + 1, np.bool_)  # is-digit, with never-digit pads either side
        self.e = np.empty(size, np.bool_)  # number ends here
        self.a = np.empty(size, np.uint8)  # value of the last two digits
        self.h = np.empty(size, np.uint8)  # hundreds digit, then the number
        self.t = np.empty(pad + size, np.uint8)
        self.size = size


class _Parser:
    """Parses pixel fields, on two threads where asked (numpy releases the GIL for the arithmetic)."""

    def __init__(self, threads: int = 1) -> None:
        self.scratch = [_Scratch() for _ in range(max(1, threads))]
        self.pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="facelab-parse") if threads > 1 else None

    def __enter__(self) -> "_Parser":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def fields(
        self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, expected: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised parse of the fields ``buf[starts[i]:ends[i]]`` (in order, non-overlapping).

        Returns uint8 ``(N, expected)`` and the sorted indices of the fields it could not vouch for
        (wrong count, a byte other than a digit or space, a number above 255 or with over three
        digits): their rows in the result are garbage and must be parsed again by :func:`_parse_one`.
        """
        n = len(starts)
        out = np.empty((n, expected), np.uint8)
        if self.pool is None or n < 2 or ends[-1] - starts[0] < PARALLEL_MIN_BYTES:
            return out, _parse_rows(buf, starts, ends, expected, self.scratch[0], out)
        mid = n // 2
        other = self.pool.submit(_parse_rows, buf, starts[mid:], ends[mid:], expected, self.scratch[1], out[mid:])
        first = _parse_rows(buf, starts[:mid], ends[:mid], expected, self.scratch[0], out[:mid])
        return out, np.concatenate([first, other.result() + mid])


def _parse_pixel_fields(
    text: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    expected: int,
    path,
    rows: np.ndarray,
    column: str,
    parser: _Parser,
) -> np.ndarray:
    """Parse ``text[starts[i]:ends[i]]`` for every i; raise naming the first bad row."""
    buf = np.frombuffer(text, np.uint8)
    pixels, bad = parser.fields(buf, starts, ends, expected)
    for i in bad.tolist():
        result = _parse_one(text[starts[i] : ends[i]], expected)
        if isinstance(result, str):
            raise located(path, f"{column} {result}", int(rows[i]))
        pixels[i] = result
    return pixels


def _parse_rows(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, expected: int, scratch: _Scratch, out: np.ndarray
) -> np.ndarray:
    """Parse fields into ``out`` batch by batch; the indices of the fields to parse again, sorted."""
    n = len(starts)
    bad_rows: list[np.ndarray] = []
    r = 0
    while r < n:
        lo = int(starts[r])
        r1 = int(np.searchsorted(ends, lo + BLOCK_BYTES, side="right"))
        r1 = min(max(r1, r + 1), n)
        bad = _parse_batch(buf, starts[r:r1], ends[r:r1], expected, scratch, out[r:r1])
        if len(bad):
            bad_rows.append(bad + r)
        r = r1
    return np.concatenate(bad_rows) if bad_rows else np.empty(0, np.int64)


def _parse_batch(
    buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, expected: int, sc: _Scratch, out: np.ndarray
) -> np.ndarray:
    n = len(starts)
    lo, hi = int(starts[0]), int(ends[-1])
    size = hi - lo
    rel_starts, rel_ends = starts - lo, ends - lo
    if size == 0:
        return np.arange(n) if expected else np.empty(0, np.int64)
    sc.ensure(size)
    P = _DIGIT_PAD
    V = sc.v[: P + size]
    v = V[P:]
    np.subtract(buf[lo:hi], ord("0"), out=v)
    for a, b in zip(rel_ends[:-1].tolist(), rel_starts[1:].tolist()):
        v[a:b] = _SPACE  # text between fields reads as spaces
    D = sc.d[: P + size + 1]
    dig = D[P : P + size]
    np.less(v, 10, out=dig)
    D[P + size] = False
    flagged: list[np.ndarray] = []

    def rows_of(positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(rel_ends, positions, side="right")

    n_digits = np.count_nonzero(dig)
    spaces = sc.e[:size]
    np.equal(v, _SPACE, out=spaces)
    if n_digits + np.count_nonzero(spaces) != size:  # a byte that is neither digit nor space
        flagged.append(rows_of(np.flatnonzero(~(dig | spaces))))
    # Runs of four or more digits.
    D8 = D.view(np.uint8)
    pairs = sc.t[: P + size - 1]
    np.add(D8[1 : P + size], D8[: P + size - 1], out=pairs)  # pairs[k] = digits among D[k], D[k+1]
    quads = sc.a[:size]
    np.add(pairs[P - 3 : P - 3 + size], pairs[P - 1 : P - 1 + size], out=quads)  # D[i-3..i]
    if quads.max() >= 4:
        flagged.append(rows_of(np.flatnonzero(quads >= 4)))
    ends_here = sc.e[:size]
    np.greater(dig, D[P + 1 : P + size + 1], out=ends_here)
    # Digit values: zero where not a digit; a = last two digits, h = hundreds digit (0 unless the
    # byte is the last of a three-digit number, as runs are at most three long where unflagged).
    np.multiply(V, D[: P + size], out=V)
    a = sc.a[:size]
    np.multiply(V[P - 1 : P - 1 + size], 10, out=a)
    np.add(a, v, out=a)
    h = sc.h[:size]
    np.multiply(V[P - 2 : P - 2 + size], D[P - 1 : P - 1 + size], out=h)
    np.multiply(h, dig, out=h)
    if h.max() > 2 or _over_255(h, a, sc.t[:size]):
        value = h.astype(np.uint16) * 100 + a
        flagged.append(rows_of(np.flatnonzero((value > MAX_PIXEL) & ends_here)))
    np.multiply(h, 100, out=h)
    np.add(h, a, out=h)
    positions = np.flatnonzero(ends_here)
    before_end = np.searchsorted(positions, rel_ends)
    counts = np.diff(before_end, prepend=0)
    wrong = counts != expected
    if wrong.any():
        flagged.append(np.flatnonzero(wrong))
    if not flagged and len(positions) == out.size:
        np.take(h, positions, out=out.reshape(-1), mode="clip")  # clip: no buffering
        return np.empty(0, np.int64)
    bad = np.unique(np.concatenate(flagged)) if flagged else np.empty(0, np.int64)
    bad = bad[bad < n]
    values = h.take(positions)
    good = np.ones(n, bool)
    good[bad] = False
    first = before_end - counts
    for i in np.flatnonzero(good).tolist():
        out[i] = values[first[i] : before_end[i]]
    return bad


def _over_255(h: np.ndarray, a: np.ndarray, tmp: np.ndarray) -> bool:
    """With every hundreds digit h <= 2: is some 100*h + a above 255? (h*64 + a > 183 exactly then.)"""
    np.multiply(h, 64, out=tmp)
    np.add(tmp, a, out=tmp)
    return bool(tmp.max() > 183)


def _parse_one(field: bytes, expected: int) -> np.ndarray | str:
    """Parse one pixel field the slow, exact way: its values, or what is wrong with it."""
    tokens = field.split()
    for token in tokens:
        if not token.isdigit():
            if not _SIGNED_INT.fullmatch(token):
                return f"value {_shown(token)} is not a whole number 0-{MAX_PIXEL}"
            if not 0 <= int(token) <= MAX_PIXEL:
                return f"value {int(token)} is out of range 0-{MAX_PIXEL}"
    if len(tokens) != expected:
        return f"has {len(tokens)} values, expected {expected}"
    values = np.array([int(t) for t in tokens], np.int64)
    if len(values) and (values.max() > MAX_PIXEL or values.min() < 0):
        bad = values[(values > MAX_PIXEL) | (values < 0)][0]
        return f"value {bad} is out of range 0-{MAX_PIXEL}"
    return values.astype(np.uint8)


def _shown(value) -> str:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    text = str(value)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "..."
    return repr(text)


# --- the small columns --------------------------------------------------------------------------


def _fer_labels(path: Path, column: pd.Series, rows: np.ndarray) -> np.ndarray:
    raw = column.to_numpy(object)
    values = pd.to_numeric(column, errors="coerce").to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & (values == np.round(values)) & (values >= 0) & (values < len(FER_LABELS))
    if ok.all():
        return values.astype(np.int64)
    i = int(np.argmin(ok))
    row, text = int(rows[i]), raw[i]
    if pd.isna(text):
        raise located(path, f"{FER_LABEL_COLUMN} label is missing", row)
    if np.isnan(values[i]) or values[i] != np.round(values[i]):
        raise located(path, f"{FER_LABEL_COLUMN} label {_shown(text)} is not an integer 0-{len(FER_LABELS) - 1}", row)
    raise located(
        path,
        f"{FER_LABEL_COLUMN} label {values[i]:g} is outside 0-{len(FER_LABELS) - 1} "
        f"(FER ids: {', '.join(f'{k} {n}' for k, n in enumerate(FER_LABELS))})",
        row,
    )


def _fer_usage(path: Path, column: pd.Series, rows: np.ndarray) -> np.ndarray:
    canonical = {u.lower(): u for u in FER_USAGES}
    values = column.to_numpy(object)
    out = np.empty(len(values), object)
    cache: dict[object, str | None] = {}
    for i, value in enumerate(values):
        if value not in cache:
            cache[value] = canonical.get(value.strip().lower()) if isinstance(value, str) else None
        usage = cache[value]
        if usage is None:
            shown = "missing" if pd.isna(value) else _shown(value)
            raise located(path, f"{FER_USAGE_COLUMN} is {shown}, expected one of {', '.join(FER_USAGES)}", int(rows[i]))
        out[i] = usage
    return out


# --- image folders ------------------------------------------------------------------------------


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_images(folder: Path) -> list[tuple[Path, int]]:
    found: list[tuple[Path, int]] = []
    classes = _subfolders(folder)
    if not classes:
        raise located(folder, "has no class folders (angry/, happy/, ...)")
    labelled = []
    for sub in classes:
        key = sub.name.strip().lower()
        if key not in EMOTION_ALIASES:
            known = ", ".join(sorted(EMOTION_ALIASES))
            raise located(sub, f"unknown emotion class folder '{sub.name}' (known names: {known})")
        labelled.append((EMOTION_ALIASES[key], sub.name, sub))
    for label, _, sub in sorted(labelled):
        files = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        found += [(p, label) for p in files]
    return found


def _read_image(file: Path, size: int) -> np.ndarray:
    import cv2  # only image folders need OpenCV

    try:
        data = np.fromfile(file, np.uint8)
    except OSError as exc:
        raise located(file, f"cannot be read: {exc.strerror or exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if len(data) else None
    if image is None:
        raise located(file, "is not a readable image (corrupt or not PNG/JPEG)")
    if image.shape != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
    import cv2

    out = np.empty((len(images), size, size), np.uint8)
    for i, image in enumerate(images):
        out[i] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return out
