"""Test photos made from what the repository has: a photo with two faces the detector finds, and a PNG bomb."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

# Two of 4 synthetic keypoint faces (seed 0) that OpenCV's Haar detector finds, placed in one photo.
FACES, OF = (0, 2), 4
PHOTO_SIZE = (480, 720)  # height, width
PLACES = ((40, 60, 260), (400, 150, 200))  # x, y, side of each face in the photo


def two_faces_photo(path: Path) -> Path:
    """A JPEG "photo" at ``path``: two synthetic faces (facelab.data.synthetic), upscaled, on a blurred
    noise background; the tests that use it check that the detector finds both."""
    import cv2

    from facelab.data import synthetic

    faces = synthetic.make_keypoint_faces(OF, seed=0)[0][list(FACES)]
    rng = np.random.default_rng(0)
    photo = cv2.GaussianBlur(rng.integers(60, 200, PHOTO_SIZE).astype(np.uint8), (0, 0), 8)
    for face, (x, y, size) in zip(faces, PLACES):
        photo[y : y + size, x : x + size] = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height black pixels: a few kB that decode to ``width * height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" * ((width // 8 + 2) * height), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )
