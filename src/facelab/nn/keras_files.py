"""Reproducible ``.keras`` model files: the same model gives the same bytes, so ``dvc.lock`` stays put.

Keras writes a ``.keras`` file as a zip of ``metadata.json`` (Keras version and the time it was saved),
``config.json`` and ``model.weights.h5``. Three things make every save of the same model a different
file: the saving time in ``metadata.json``, the zip entries' own timestamps, and in ``config.json`` the
``shared_object_id`` of every object used more than once (e.g. a dtype policy shared by layers), which
is the object's memory address (Python's ``id``) in the saving process.

``save_model`` saves with Keras to a scratch folder beside the target, copies that zip entry by entry
(same order, names and compression) with fixed timestamps, permissions and system, ``date_saved``
pinned to ``DATE_SAVED`` and the shared object ids renumbered 1, 2, ... in the order they first appear,
and renames the copy onto the target (``facelab.atomic``): a failed save leaves the old file, or none,
never half a file. ``model.weights.h5`` is copied as it is: h5py stores no creation times
(``track_times`` is off by default) and HDF5 lays the same weights out the same way (measured: the same
weights saved by two processes give the same bytes).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path

import keras

from facelab.atomic import atomic_path

METADATA_ENTRY = "metadata.json"
CONFIG_ENTRY = "config.json"
SHARED_ID_KEY = "shared_object_id"  # Keras: id(obj) of an object serialised more than once
# Every entry's timestamp: the earliest a zip can hold (and what Keras gives its own metadata.json and config.json).
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# metadata.json's "date_saved", in Keras's format: kept (Keras's KerasFileEditor reads it), but pinned.
DATE_SAVED = "1980-01-01@00:00:00"
CREATE_SYSTEM = 3  # Unix, whatever system saved the file
FILE_ATTRIBUTES = (stat.S_IFREG | 0o644) << 16
FOLDER_ATTRIBUTES = (stat.S_IFDIR | 0o755) << 16 | 0x10  # 0x10: MS-DOS directory flag
COPY_CHUNK_BYTES = 1 << 20


def save_model(model: keras.Model, path: str | os.PathLike) -> None:
    """Save ``model`` to the ``.keras`` file ``path``, atomically and reproducibly (see the module doc)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as scratch:
        raw = Path(scratch) / "model.keras"
        model.save(raw)
        with atomic_path(path, suffix=".keras") as tmp:
            reproducible_copy(raw, tmp)


def reproducible_copy(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Copy the ``.keras`` zip ``source`` to ``target`` (overwritten, not atomically) without what varies by save.

    Entries keep their order, names and compression; their timestamps, permissions and system are fixed,
    ``metadata.json``'s ``date_saved`` (if any) becomes ``DATE_SAVED`` and ``config.json``'s shared
    object ids are renumbered; every other entry's bytes are copied unchanged.
    """
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for entry in src.infolist():
            info = zipfile.ZipInfo(entry.filename, date_time=ZIP_DATE_TIME)
            info.compress_type = entry.compress_type
            info.create_system = CREATE_SYSTEM
            info.external_attr = FOLDER_ATTRIBUTES if entry.is_dir() else FILE_ATTRIBUTES
            if entry.is_dir() or entry.filename in REWRITERS:
                data = src.read(entry)
                dst.writestr(info, REWRITERS[entry.filename](data) if entry.filename in REWRITERS else data)
                continue
            info.file_size = entry.file_size  # lets zipfile choose ZIP64 up front, as writestr would
            with src.open(entry) as fin, dst.open(info, "w") as fout:
                shutil.copyfileobj(fin, fout, COPY_CHUNK_BYTES)


def _pinned_metadata(raw: bytes) -> bytes:
    metadata = json.loads(raw)
    if "date_saved" in metadata:
        metadata["date_saved"] = DATE_SAVED
    return json.dumps(metadata).encode()  # as Keras writes it: json.dumps' defaults


def _renumbered_config(raw: bytes) -> bytes:
    """``config.json`` with each distinct shared object id replaced by its rank of first appearance.

    Keras only matches these ids against each other within the file, so any one-to-one renaming loads
    the same model.
    """
    numbers: dict[int, int] = {}

    def renumber(node):
        if isinstance(node, dict):
            if isinstance(node.get(SHARED_ID_KEY), int):
                node[SHARED_ID_KEY] = numbers.setdefault(node[SHARED_ID_KEY], len(numbers) + 1)
            for value in node.values():
                renumber(value)
        elif isinstance(node, list):
            for value in node:
                renumber(value)

    config = json.loads(raw)
    renumber(config)
    return json.dumps(config).encode()


# entry -> how its bytes are rewritten (read whole: both are small)
REWRITERS = {METADATA_ENTRY: _pinned_metadata, CONFIG_ENTRY: _renumbered_config}
