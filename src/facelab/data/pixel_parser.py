"""The pixel parser: space-separated 0-255 pixel fields -> uint8 rows, vectorised with numpy.

Pixel columns are most of the faces' CSV files, so they are not parsed a row at a time: every
field of a block of text is parsed at once. Digits are found by byte arithmetic, each number is
built from the (at most three) digits before its end, and each row's count of numbers is checked
from the positions of those ends. All of it runs on reused cache-sized buffers: fresh memory costs
more here than the arithmetic. Large blocks are split between two threads (numpy releases the GIL).
Only a row that fails a check (or holds something unusual, like a tab) is parsed again with plain
Python, which either accepts it or says exactly what is wrong (:class:`~facelab.errors.FacelabError`
naming the file and row). :mod:`facelab.data.csv_engine` feeds it whole files.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from facelab.errors import located

# --- constants ----------------------------------------------------------------------------------

BLOCK_BYTES = 4 << 20  # text parsed at a time (its work buffers stay in cache); csv_engine reads in such blocks
PARSE_THREADS = min(2, os.cpu_count() or 1)  # pixel-parsing threads for plain (not gzip) files
PARALLEL_MIN_BYTES = 256 << 10  # fields shorter than this in all are parsed on one thread

MAX_PIXEL = 255
_DIGIT_PAD = 4  # never-digit bytes kept before each scratch buffer
_SPACE = (ord(" ") - ord("0")) & 0xFF  # a space after "subtract '0'" in uint8 arithmetic
_SIGNED_INT = re.compile(rb"[+-]?[0-9]+")
_SHOWN_CHARS = 20  # how much of a bad value an error message quotes


# --- public API ---------------------------------------------------------------------------------


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
    with PixelParser(PARSE_THREADS) as parser:
        return parse_pixel_fields(text, starts, ends, expected, path, rows, "pixels", parser)


class PixelParser:
    """Parses pixel fields, on two threads where asked (numpy releases the GIL for the arithmetic)."""

    def __init__(self, threads: int = 1) -> None:
        self.scratch = [_Scratch() for _ in range(max(1, threads))]
        self.pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="facelab-parse") if threads > 1 else None

    def __enter__(self) -> "PixelParser":
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


def parse_pixel_fields(
    text: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    expected: int,
    path,
    rows: np.ndarray,
    column: str,
    parser: PixelParser,
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


def shown_value(value) -> str:
    """A value as an error message quotes it: its repr, cut after a few characters."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    text = str(value)
    if len(text) > _SHOWN_CHARS:
        text = text[:_SHOWN_CHARS] + "..."
    return repr(text)


# --- the vectorised parse -----------------------------------------------------------------------


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
                return f"value {shown_value(token)} is not a whole number 0-{MAX_PIXEL}"
            if not 0 <= int(token) <= MAX_PIXEL:
                return f"value {int(token)} is out of range 0-{MAX_PIXEL}"
    if len(tokens) != expected:
        return f"has {len(tokens)} values, expected {expected}"
    values = np.array([int(t) for t in tokens], np.int64)
    if len(values) and (values.max() > MAX_PIXEL or values.min() < 0):
        bad = values[(values > MAX_PIXEL) | (values < 0)][0]
        return f"value {bad} is out of range 0-{MAX_PIXEL}"
    return values.astype(np.uint8)
