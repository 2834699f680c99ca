"""Photos in, faces out: reading any photo robustly, finding its faces, cropping them like the training faces.

* ``read_photo`` / ``decode_photo``: a grayscale uint8 array from JPEG, PNG (8 or 16 bit, gray,
  colour or with alpha, composited on white) or anything else OpenCV decodes, with the EXIF
  orientation applied. Bad input is a one-line ``FacelabError`` naming the file: an empty file,
  a truncated image, a file that is no image, and an image larger than ``MAX_PIXELS`` (checked in
  the header, before anything is decoded: a small file can claim billions of pixels).
* ``detect_faces``: OpenCV's bundled frontal-face Haar cascade (no download), largest face first.
* ``crop_face``: a square crop around a face box, calibrated so that the eyes and mouth land
  where they are in the training faces (Kaggle/YTF 96x96 crops), and the affine map that takes
  points in the crop back to the photo.

Decoding: ``cv2.IMREAD_UNCHANGED`` keeps 16-bit depth and the alpha channel but ignores EXIF
orientation (every other flag applies it, but drops alpha), so the orientation is read from the
header (Pillow, which reads only the header here) and applied here. Nothing here knows of models.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from facelab.errors import FacelabError, located

MAX_PIXELS = 100_000_000  # refuse images above 100 megapixels (decompression bombs), from the header
EXIF_ORIENTATION = 0x0112

# Face detection: the photo is shrunk to at most this side first (Haar cost grows with the pixel count).
DETECT_MAX_SIDE = 1280
DETECT_SCALE_FACTOR = 1.1
DETECT_MIN_NEIGHBORS = 5
DETECT_MIN_SIZE = 30  # pixels, at the detection scale
CASCADE_FILE = "haarcascade_frontalface_default.xml"

# The crop around a detected box, calibrated on real faces (YTF faces from the keypoint data, upscaled
# and pasted into larger pictures, then detected): a square of side (1 + 2 * CROP_MARGIN) * box width,
# centred CROP_SHIFT_Y * box width below the box's centre, puts the eye midpoint at ~(48, 32), the
# inter-ocular distance at ~32 px and eye-to-mouth at ~36 px of 96: as in the training crops.
CROP_MARGIN = 0.055
CROP_SHIFT_Y = 0.08

_SIGNATURES = {  # formats whose start is recognisable even when the rest is cut off
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}


# --- reading --------------------------------------------------------------------------------


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """The photo at ``path`` as a 2-D grayscale uint8 array, upright (EXIF orientation applied)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise located(path, "no such file") from None
    except IsADirectoryError:
        raise located(path, "is a directory, not an image file") from None
    except OSError as exc:
        raise located(path, f"cannot read: {exc.strerror or exc}") from None
    return decode_photo(data, str(path))


def decode_photo(data: bytes, name: str = "<image>") -> np.ndarray:
    """The image file held in ``data`` (its name, for messages, is ``name``) as grayscale uint8."""
    if len(data) == 0:
        raise located(name, "empty file (0 bytes), not an image")
    fmt, size, orientation = _header(data, name)
    if size is not None:
        _check_size(size, name)
    if fmt == "JPEG" and not _jpeg_complete(data):
        raise located(name, "truncated JPEG image: the data ends before the end-of-image marker")
    if fmt == "PNG" and b"IEND" not in data[-64:]:
        raise located(name, "truncated PNG image: the data ends before the IEND chunk")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        if fmt is None:
            raise located(name, "not an image file (no known image format)")
        raise located(name, f"cannot decode this {fmt} image: truncated or corrupt")
    if size is None:  # a format only OpenCV knows: its own limit applied, check ours now
        _check_size((image.shape[1], image.shape[0]), name)
    return _orient(_to_gray8(image), orientation)


def _header(data: bytes, name: str) -> tuple[str | None, tuple[int, int] | None, int]:
    """Format, (width, height) and EXIF orientation from the header alone (nothing is decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                orientation = 1
                if im.format != "PNG" or "exif" in im.info:  # Pillow loads a whole PNG to look for EXIF
                    orientation = int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
                return im.format, im.size, orientation
    except Image.DecompressionBombError as exc:  # Pillow's own, higher limit: it names only the pixel count
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "too many pixels"
        raise located(
            name, f"image too large: {pixels} (limit {MAX_PIXELS / 1e6:g}), refused before decoding"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        pass
    for signature, fmt in _SIGNATURES.items():
        if data.startswith(signature):
            raise located(name, f"truncated or corrupt {fmt} image: its header cannot be read")
    return None, None, 1


def _check_size(size: tuple[int, int], name: str) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise located(
            name,
            f"image too large: {width}x{height} = {width * height / 1e6:.1f} megapixels "
            f"(limit {MAX_PIXELS / 1e6:g}), refused before decoding",
        )
    if width <= 0 or height <= 0:
        raise located(name, f"image has no pixels ({width}x{height})")


def _jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG holds its end-of-image marker after the start of its (first) scan.

    Markers are walked up to the scan so that an EXIF thumbnail's own end marker does not count;
    inside the scan data 0xFF is always followed by 0x00 or a restart marker, never 0xD9.
    """
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker == 0xD9:
            return True
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:
            return data.find(b"\xff\xd9", i + 2 + length) != -1
        i += 2 + length
    return False


def _to_gray8(image: np.ndarray) -> np.ndarray:
    """Any decoded image (gray/BGR/BGRA, 8/16 bit or float) as grayscale uint8; alpha composited on white."""
    if image.dtype == np.uint8:
        full = 255.0
    elif image.dtype == np.uint16:
        full = 65535.0
    else:  # float images (TIFF, EXR) hold 0..1
        image, full = np.clip(np.nan_to_num(image.astype(np.float32)), 0.0, 1.0), 1.0
    alpha = None
    if image.ndim == 3 and image.shape[2] == 4:
        alpha, image = image[..., 3].astype(np.float32) / full, image[..., :3]
    elif image.ndim == 3 and image.shape[2] == 2:  # gray + alpha
        alpha, image = image[..., 1].astype(np.float32) / full, image[..., 0]
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3:
        image = image[..., 0]
    if alpha is None and image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    gray = image.astype(np.float32) * (255.0 / full)
    if alpha is not None:
        gray = gray * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def _orient(gray: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) so the image is upright, as a viewer shows it."""
    transforms = {
        2: lambda a: a[:, ::-1],  # mirrored
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # mirrored vertically
        5: lambda a: a.T,  # transposed
        6: lambda a: np.rot90(a, -1),  # rotated 90 clockwise to display
        7: lambda a: a.T[::-1, ::-1],  # transversed
        8: lambda a: np.rot90(a, 1),  # rotated 90 counter-clockwise to display
    }
    fn = transforms.get(orientation)
    return np.ascontiguousarray(fn(gray)) if fn else gray


# --- detecting ------------------------------------------------------------------------------

_local = threading.local()  # a CascadeClassifier per thread: the serving threads share nothing


def _cascade():
    cascade = getattr(_local, "cascade", None)
    if cascade is None:
        if not hasattr(cv2, "CascadeClassifier"):
            raise FacelabError(
                f"OpenCV {cv2.__version__} has no Haar cascade face detector (OpenCV 5 moved it "
                "out): install opencv-python-headless<5"
            )
        path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise FacelabError(f"{path}: OpenCV's face cascade is missing or unreadable")
        _local.cascade = cascade
    return cascade


def detect_faces(gray: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Face boxes ``(x, y, w, h)`` in ``gray``'s pixels, largest first."""
    scale = min(1.0, DETECT_MAX_SIDE / max(gray.shape[:2]))
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    found = _cascade().detectMultiScale(
        small,
        scaleFactor=DETECT_SCALE_FACTOR,
        minNeighbors=DETECT_MIN_NEIGHBORS,
        minSize=(DETECT_MIN_SIZE, DETECT_MIN_SIZE),
    )
    boxes = [tuple(int(round(v / scale)) for v in box) for box in np.asarray(found).reshape(-1, 4)]
    return sorted(boxes, key=lambda b: (-b[2] * b[3], b[1], b[0]))


# --- cropping -------------------------------------------------------------------------------


def crop_region(box, margin: float = CROP_MARGIN, shift_y: float = CROP_SHIFT_Y) -> tuple[int, int, int]:
    """The square ``(left, top, side)`` in photo pixels that ``crop_face`` cuts around ``box``."""
    x, y, w, h = box
    extent = max(w, h)
    side = max(1, int(round(extent * (1 + 2 * margin))))
    cx, cy = x + w / 2.0, y + h / 2.0 + shift_y * extent
    return int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side


def crop_face(
    gray: np.ndarray, box, size: int, margin: float = CROP_MARGIN, shift_y: float = CROP_SHIFT_Y
) -> tuple[np.ndarray, np.ndarray]:
    """The face in ``box`` as a ``size`` x ``size`` uint8 crop, and the 2x3 affine crop -> photo map.

    The square around the box is padded by repeating the edge pixels where it leaves the photo.
    A point ``(u, v)`` in crop pixels is ``to_photo @ (u, v, 1)`` in photo pixels (pixel centres at
    integers in both, as OpenCV's resize has them).
    """
    left, top, side = crop_region(box, margin, shift_y)
    height, width = gray.shape[:2]
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, width), min(top + side, height)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box {tuple(box)} lies outside the {width}x{height} photo")
    region = gray[y0:y1, x0:x1]
    pads = (y0 - top, top + side - y1, x0 - left, left + side - x1)
    if any(pads):
        region = cv2.copyMakeBorder(region, *pads, cv2.BORDER_REPLICATE)
    if side != size:
        interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        region = cv2.resize(region, (size, size), interpolation=interpolation)
    a = side / size
    to_photo = np.array([[a, 0.0, left + 0.5 * a - 0.5], [0.0, a, top + 0.5 * a - 0.5]])
    return np.ascontiguousarray(region), to_photo


def to_photo_points(points: np.ndarray, to_photo: np.ndarray) -> np.ndarray:
    """(N, 2) crop coordinates mapped to photo coordinates with ``crop_face``'s affine map."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ to_photo[:, :2].T + to_photo[:, 2]
