"""facelab's one error type: a message a user can act on, printed as one line."""

from __future__ import annotations


class FacelabError(Exception):
    """A problem with the user's input or set-up, reported as one line without a traceback.

    Build it with where the problem is (file, row) and what is wrong, e.g.
    ``FacelabError("data/training.csv: row 12: Image has 9215 values, expected 9216")``.
    """


def located(path: object, message: str, row: int | None = None) -> FacelabError:
    """A FacelabError that names the file and, where known, the 1-based data row."""
    where = f"{path}: row {row}" if row is not None else f"{path}"
    return FacelabError(f"{where}: {message}")
