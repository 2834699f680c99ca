"""The CSV engine under :mod:`facelab.data.readers`: a whole CSV file (plain or gzip) -> its pixel
column as uint8 rows, every other column as text, and each row's number for messages.

Pixel columns are most of these files (a real fer2013.csv is 290 MB of text), so they are
not parsed a row at a time. A reader thread reads and decompresses the file in 4 MB pieces (zlib
releases the GIL) while the caller's thread cuts each piece into lines and fields with numpy and
parses every pixel field in it at once (:mod:`facelab.data.pixel_parser`: byte arithmetic on reused
cache-sized buffers; a row that fails a check is parsed again with plain Python, which either
accepts it or says exactly what is wrong). Plain (not gzip) files, which leave the second core idle,
are parsed on two threads. The small columns (labels, coordinates, usage) are cut out of each line
and read by pandas. Files with quoted fields go through pandas' CSV parser first (slower, still
vectorised). A gzip file may hold several members; a cut-off or damaged one raises
:class:`~facelab.errors.FacelabError`. ``benchmarks/bench_loading.py`` measures it.

The piece size and the thread count are ``pixel_parser.BLOCK_BYTES`` and ``pixel_parser.PARSE_THREADS``,
read each time a file is read (tests make them small).
"""

from __future__ import annotations

import io
import itertools
import queue
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from facelab.data import pixel_parser
from facelab.errors import located

# --- constants ----------------------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
READ_BYTES = 1 << 20  # compressed bytes fed to zlib at a time
QUEUE_BLOCKS = 4  # blocks the reader thread may run ahead of the parser


# --- public API ---------------------------------------------------------------------------------


@dataclass
class Table:
    """A CSV file as read: the pixel column parsed, the rest as text, the rows' numbers."""

    pixels: np.ndarray  # uint8 (N, expected)
    others: pd.DataFrame  # every other column, as read (object dtype), N rows
    rows: np.ndarray  # int64 (N,) 1-based data row numbers for messages
    count: int


class _Quoted(Exception):
    """The file has quoted fields: the fast line cutter does not apply."""


def read_table(path: Path, pixel_column: str, expected: int, required: Sequence[str]) -> Table:
    """Read a CSV file with a header: ``pixel_column`` as uint8 rows of ``expected`` values, the other columns.

    Blank lines are skipped (but counted in row numbers); ``required`` and ``pixel_column`` must be in
    the header. Every bad input raises :class:`~facelab.errors.FacelabError` naming the file and row.
    """
    # A gzip file keeps a core busy decompressing; a plain one leaves both to the parser.
    threads = 1 if _is_gzip(path) else pixel_parser.PARSE_THREADS
    reader = _ReadAhead(_file_chunks(path))
    try:
        with pixel_parser.PixelParser(threads) as parser:
            return _scan_table(path, _lines(reader), pixel_column, expected, required, parser)
    except _Quoted:
        pass
    finally:
        reader.close()
    return _read_quoted_table(path, pixel_column, expected, required)


# --- reading the bytes --------------------------------------------------------------------------


def _is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == GZIP_MAGIC
    except OSError:
        return False  # _file_chunks reports it


def _file_chunks(path: Path) -> Iterator[bytes]:
    """The file's text in chunks of at most pixel_parser.BLOCK_BYTES, gunzipped when it starts with the gzip magic."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head != GZIP_MAGIC:
                while chunk := fh.read(pixel_parser.BLOCK_BYTES):
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
            out = inflater.decompress(pending, pixel_parser.BLOCK_BYTES)
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
        while not inflater.eof and (out := inflater.decompress(b"", pixel_parser.BLOCK_BYTES)):
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
    parser: pixel_parser.PixelParser,
) -> Table:
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
        pixels = pixel_parser.parse_pixel_fields(data, starts, ends, expected, path, rows, pixel_column, parser)
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
    return Table(pixels, others, rows, len(rows))


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


def _read_quoted_table(path: Path, pixel_column: str, expected: int, required: Sequence[str]) -> Table:
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
    pixels = pixel_parser.parse_pixel_strings(strings, expected, path)
    others = frame.drop(columns=[pixel_column]).reset_index(drop=True)
    return Table(pixels, others, rows, len(frame))
