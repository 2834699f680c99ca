"""How a synthetic face is drawn: its shapes, as polygons, and their painting on a canvas.

:func:`face_shapes` builds a grayscale face (background, clothes, neck, hair, ears, head outline,
wrinkles, brows, nose, eyes with whites, iris and pupil, lips, teeth) for a whole batch of faces at
once with numpy; :func:`paint` fills those polygons with OpenCV's anti-aliased polygon fill, face by
face, on a canvas ``SUPERSAMPLE`` times the target size (the caller halves it). Every shape is built
in a "face frame" (units of 1/96 of the image, x to the image's right, y down, origin at the face
centre) and moved into the picture by one rotation + scale + shift; the 15 Kaggle keypoints are taken
from the same geometry and moved by the same transform, so they sit exactly on the drawn features.
"left" keypoints are the person's left, on the image's right (larger x), as in Kaggle.

The per-face parameters come from ``facelab.data.synthetic`` (a dict of (n,) arrays). Its short
keys: ``fw``/``fh`` the head's half width/height, ``fc`` its centre's y; ``ex`` the eyes' distance
from the middle, ``ey`` their height, ``ew`` their half width; ``hu``/``hl`` the upper/lower lid's
height; ``by`` the brows' height, ``bx_in``/``bx_out`` their inner/outer ends' x; ``my`` the mouth's
height, ``mw`` its half width; ``tu``/``tl`` the upper/lower lip's thickness; ``*_c``/``*_d`` a tone
or a darkening (0-255).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facelab.formats import KEYPOINT_NAMES

# --- constants --------------------------------------------------------------------------------

FRAME = 96.0  # face-frame units per image side
FACE_CENTRE = (48.0, 50.0)  # where the face-frame origin lands before the random shift
SUPERSAMPLE = 2  # draw at 2x, then average 2x2 blocks
SUBPIXEL_BITS = 4  # cv2 fixed-point fraction bits for polygon vertices
SHIFT_UNITS = 5.0  # random shift, face-frame units
KEYPOINT_MARGIN = 2.0  # keypoints stay this far (face-frame units) inside the frame

HAIR_SHORT, HAIR_LONG, HAIR_BALD = 0, 1, 2  # the values of the "hair_style" parameter
SIDES = (-1.0, 1.0)  # the person's right (image left), then left
EYE_SIDES = ((-1.0, "right"), (1.0, "left"))  # the same, with the keypoint names' word
WRINKLE_MIN = 0.05  # wrinkles and folds weaker than this are not drawn
FOREHEAD_LINE_Y = (-31.0, -35.0, -39.0)
NOSE_WRINKLE_STRENGTH = (1.0, 1.0, 0.6)  # the creases across the nose bridge, top down
NOSE_WRINKLE_WAYS = ((1.0, 1.0), (-1.0, 0.4))  # (direction, weight): one side of the bridge stronger

_LINE = cv2.LINE_AA
_FIX = float(1 << SUBPIXEL_BITS)
_CURVE_T = np.linspace(-1.0, 1.0, 17)  # parameter along lids, lips, brows
_BROW_T = np.linspace(-0.06, 1.06, 12)  # along a brow, slightly past both ends
_ANGLES = np.linspace(0.0, 2.0 * np.pi, 32, endpoint=False)
_COS, _SIN = np.cos(_ANGLES), np.sin(_ANGLES)
_BEZIER = np.stack([(1 - _BROW_T) ** 2, 2 * (1 - _BROW_T) * _BROW_T, _BROW_T**2], 1)
_BEZIER_D = np.stack([-2 * (1 - _BROW_T), 2 - 4 * _BROW_T, 2 * _BROW_T], 1)  # d/dt of _BEZIER
_BROW_TAPER = np.linspace(1.0, 0.65, len(_BROW_T))
_LASH_WIDTH = 0.55 + 0.2 * (_CURVE_T + 1.0)  # upper lid line, thicker towards the outer corner
_BOW = 1.0 - 0.18 * np.exp(-((_CURVE_T / 0.16) ** 2))  # the upper lip's dip in the middle


# --- shape helpers: batches of polygons, arrays (n, points, 2) in the face frame -------------


def _col(value):
    """A per-face parameter as a column (n, 1) so it broadcasts along a polygon's points."""
    return value[:, None] if isinstance(value, np.ndarray) else value


def _xy(x, y) -> np.ndarray:
    """Stack x and y (broadcast together) on a last axis of 2."""
    x, y = np.broadcast_arrays(x, y)
    return np.stack((x, y), -1)


def _ellipse(cx, cy, a, b, angle=0.0) -> np.ndarray:
    """An ellipse around (cx, cy) with half axes a (along x) and b, turned by ``angle`` radians."""
    x, y = _col(a) * _COS, _col(b) * _SIN
    if np.any(angle):
        cos, sin = _col(np.cos(angle)), _col(np.sin(angle))
        x, y = cos * x - sin * y, sin * x + cos * y
    return _xy(_col(cx) + x, _col(cy) + y)


def _closed(x, upper, lower) -> np.ndarray:
    """The polygon between two curves over the same x: along ``upper``, back along ``lower``."""
    return np.concatenate((_xy(x, upper), _xy(x, lower)[:, ::-1]), 1)


def _offset(points: np.ndarray, tangent: np.ndarray, half_width) -> np.ndarray:
    """The polygon around a centre line: its points moved ``half_width`` out along each side's normal."""
    scale = half_width / (np.sqrt(tangent[..., 0] ** 2 + tangent[..., 1] ** 2) + 1e-9)
    normal = _xy(-tangent[..., 1] * scale, tangent[..., 0] * scale)
    return np.concatenate((points + normal, (points - normal)[:, ::-1]), 1)


def _ribbon(points: np.ndarray, half_width) -> np.ndarray:
    """A thick curve as one polygon: the centre line offset both ways along its normals."""
    tangent = np.empty_like(points)
    tangent[:, 1:-1] = points[:, 2:] - points[:, :-2]
    tangent[:, 0], tangent[:, -1] = points[:, 1] - points[:, 0], points[:, -1] - points[:, -2]
    return _offset(points, tangent, half_width)


def _bezier_ribbon(start, control, end, half_width) -> np.ndarray:
    """A thick quadratic Bezier curve (control points (n, 2)), a little past both end points."""
    controls = np.stack(np.broadcast_arrays(start, control, end), 1)
    return _offset(_BEZIER @ controls, _BEZIER_D @ controls, half_width)


# --- the face's parts, back to front ----------------------------------------------------------


class _Drawing:
    """What to paint for a batch of ``n`` faces, back to front, and the keypoints found on the way."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.layers: list = []
        self.keypoints: dict[str, np.ndarray] = {}

    def add(self, tone, *polygons, on=None) -> None:
        """Polygons filled in one tone (per face), on the faces where ``on`` is True (every face if None)."""
        self.layers.append((np.broadcast_to(np.clip(tone, 0.0, 255.0), (self.n,)), on, polygons))


@dataclass
class _Layout:
    """Where the features sit, (n,) arrays in face-frame units, for the parts drawn around them."""

    eye_x: tuple[np.ndarray, np.ndarray]  # the eyes' centres: the person's right (image left), left
    upper_lid: np.ndarray  # lid heights above and below the eye's corner line, expression included
    lower_lid: np.ndarray
    nose_x: np.ndarray
    nose_y: np.ndarray
    nose_half_width: np.ndarray
    mouth_x: np.ndarray
    mouth_y: np.ndarray
    mouth_half_width: np.ndarray


def _layout(params: dict) -> _Layout:
    yaw = params["yaw"]
    return _Layout(
        eye_x=(-params["ex"] + 0.3 * yaw, params["ex"] + 0.3 * yaw),
        upper_lid=np.clip(params["hu"] + params["eye_up"], 0.7, 6.5),
        lower_lid=np.clip(params["hl"] + params["eye_low"], 0.5, 4.0),
        nose_x=yaw,
        nose_y=params["nose_y"],
        nose_half_width=params["nose_w"],
        mouth_x=0.6 * yaw,
        mouth_y=params["my"],
        mouth_half_width=np.clip(params["mw"] + params["mouth_wide"], 6.0, 21.0),
    )


def _backdrop(drawing: _Drawing, params: dict) -> None:
    """A shape in the background (on some faces), the clothes, the neck."""
    blob_x = params["blob_x"]
    drawing.add(
        params["blob_c"],
        _ellipse(np.copysign(62.0, blob_x) + 12.0 * blob_x, params["blob_y"], params["blob_a"], params["blob_b"]),
        on=params["blob_on"],
    )
    drawing.add(params["clothes"], _ellipse(0.0, params["fc"] + params["fh"] + 42.0, params["fw"] * 1.9, 36.0))
    neck_x = _col(params["fw"]) * np.array([-0.55, 0.55, 0.62, -0.62])
    drawing.add(params["skin"] * 0.78, _xy(neck_x, np.array([0.0, 0.0, 80.0, 80.0])))


def _back_hair(drawing: _Drawing, params: dict) -> None:
    """Hair behind the head: long (down past the head) or short (around its top)."""
    style, half_width, half_height, centre_y = params["hair_style"], params["fw"], params["fh"], params["fc"]
    long_hair = _ellipse(0.0, centre_y + 4.0, half_width + 5.5, half_height + 5.0)
    drawing.add(params["hair"], long_hair, on=style == HAIR_LONG)
    short_hair = _ellipse(0.0, centre_y - 9.0, half_width + 3.5, half_height * 0.72)
    drawing.add(params["hair"], short_hair, on=style == HAIR_SHORT)


def _ears(drawing: _Drawing, params: dict) -> None:
    ears = (_ellipse(side * params["fw"] * 0.97, -4.0, 4.5, 8.5, side * 0.15) for side in SIDES)
    drawing.add(params["skin"] * 0.9, *ears)


def _head(drawing: _Drawing, params: dict) -> np.ndarray:
    """The head, narrower towards the chin, with a soft shade along its outline; returns the outline."""
    jaw = 1.0 - _col(params["jaw"]) * np.maximum(_SIN, 0.0) ** 2
    outline = _xy(_col(params["fw"]) * _COS * jaw, _col(params["fc"]) + _col(params["fh"]) * _SIN)
    drawing.add(params["skin"], outline)
    drawing.add(params["skin"] - 9.0, _ribbon(outline * 0.96, 2.2))
    return outline


def _eye_sockets(drawing: _Drawing, params: dict, layout: _Layout) -> None:
    sockets = (
        _ellipse(eye_x, params["ey"] - 1.8, params["ew"] + 3.2, layout.upper_lid + 3.4) for eye_x in layout.eye_x
    )
    drawing.add(params["skin"] - params["socket_d"], *sockets)


def _forehead_lines(drawing: _Drawing, params: dict) -> None:
    """Lines across the forehead (fear, surprise), shorter higher up."""
    strength = params["forehead"]
    lines = (
        _ribbon(
            _xy(
                _CURVE_T * (15.0 - 2.5 * row) + _col(params["yaw"]) * 0.2,
                _col(line_y + params["brow_in_dy"] * 0.3) + 1.8 * _CURVE_T * _CURVE_T,
            ),
            0.55,
        )
        for row, line_y in enumerate(FOREHEAD_LINE_Y)
    )
    drawing.add(params["skin"] - 32.0 * np.minimum(strength, 1.3), *lines, on=strength > WRINKLE_MIN)


def _frown_lines(drawing: _Drawing, params: dict) -> None:
    """Two short vertical creases between the brows (anger, sadness)."""
    strength, shift = params["glabella"], params["yaw"] * 0.3
    creases = (
        _bezier_ribbon(
            _xy(side * 2.2 + shift, -21.0), _xy(side * 2.8 + shift, -18.0), _xy(side * 2.0 + shift, -14.5), 0.5
        )
        for side in SIDES
    )
    drawing.add(params["skin"] - 38.0 * np.minimum(strength, 1.3), *creases, on=strength > WRINKLE_MIN)


def _smile_folds(drawing: _Drawing, params: dict, layout: _Layout) -> None:
    """The folds from beside the nose to beside the mouth corners."""
    strength = params["fold"]
    nose_x, nose_y, nose_half_width = layout.nose_x, layout.nose_y, layout.nose_half_width
    mouth_x, mouth_y, mouth_half_width = layout.mouth_x, layout.mouth_y, layout.mouth_half_width
    folds = (
        _bezier_ribbon(
            _xy(nose_x + side * (nose_half_width + 1.5), nose_y - 1.0),
            _xy(mouth_x + side * (mouth_half_width + 4.0), mouth_y - 6.0),
            _xy(mouth_x + side * (mouth_half_width + 2.5), mouth_y + 2.0),
            0.6,
        )
        for side in SIDES
    )
    drawing.add(params["skin"] - 32.0 * np.minimum(strength, 1.4), *folds, on=strength > WRINKLE_MIN)


def _nose_wrinkles(drawing: _Drawing, params: dict, layout: _Layout) -> None:
    """Disgust: creases across the nose bridge, one side stronger."""
    strength = params["nose_wrinkle"]
    stronger_side = np.where(params["asym"] >= 0, 1.0, -1.0)
    for row, row_strength in enumerate(NOSE_WRINKLE_STRENGTH):
        for way, weight in NOSE_WRINKLE_WAYS:
            crease = _xy(
                _col(layout.nose_x) + _col(way * stronger_side) * np.linspace(0.3, 4.0, 5),
                _col(params["ey"] + 5.0 + 2.4 * row) + np.linspace(0.0, 1.4, 5),
            )
            drawing.add(
                params["skin"] - 40.0 * weight * row_strength * np.minimum(strength, 1.3),
                _ribbon(crease, 0.45),
                on=strength > WRINKLE_MIN,
            )


def _front_hair(drawing: _Drawing, params: dict, outline: np.ndarray) -> None:
    """The hair over the forehead: the head's outline, a little larger, cut at a curved hairline."""
    cap = outline * 1.02
    across = cap[..., 0] / _col(params["fw"])  # -1 .. 1 from the right side of the head to the left
    hairline = _col(params["hairline"]) + _col(params["hair_curve"]) * across**2 + _col(params["hair_tilt"]) * across
    cap[..., 1] = np.minimum(cap[..., 1], hairline)
    drawing.add(params["hair"], cap, on=params["hair_style"] != HAIR_BALD)


def _brows(drawing: _Drawing, params: dict, layout: _Layout) -> None:
    """Thick tapered quadratic curves from the inner to the outer end; their keypoints."""
    brows = []
    arch = np.maximum(params["brow_arch0"] + params["brow_arch"], -0.5)
    eye_dx, brow_y = params["ex"], params["by"]
    for (side, name), eye_x in zip(EYE_SIDES, layout.eye_x):
        inner = _xy(eye_x - side * (eye_dx - params["bx_in"] - params["brow_in_dx"]), brow_y + params["brow_in_dy"])
        outer = _xy(eye_x + side * (params["bx_out"] - eye_dx), brow_y + params["by_out"] + params["brow_out_dy"])
        middle = (inner + outer) / 2.0 + _xy(np.full(drawing.n, side * 2.0), -arch * 2.0)
        brows.append(_bezier_ribbon(inner, middle, outer, _col(params["brow_w"]) * _BROW_TAPER))
        drawing.keypoints[f"{name}_eyebrow_inner_end"], drawing.keypoints[f"{name}_eyebrow_outer_end"] = inner, outer
    drawing.add(params["brow"], *brows)


def _nose(drawing: _Drawing, params: dict, layout: _Layout) -> None:
    """Bridge shadow on the side away from the light, wings, nostrils, tip highlight; the tip keypoint."""
    skin, nose_x, nose_y, half_width = params["skin"], layout.nose_x, layout.nose_y, layout.nose_half_width
    shade = np.where(np.cos(params["light_dir"]) < 0, 1.0, -1.0)
    bridge = _bezier_ribbon(
        _xy(nose_x + shade * 2.3, params["ey"] + 2.0),
        _xy(nose_x + shade * 2.8, nose_y - 8.0),
        _xy(nose_x + shade * (half_width - 0.5), nose_y - 1.5),
        0.6,
    )
    drawing.add(skin - 15.0, bridge)
    wings = (
        _bezier_ribbon(
            _xy(nose_x + side * (half_width - 0.8), nose_y - 2.8),
            _xy(nose_x + side * (half_width + 1.2), nose_y + 1.2),
            _xy(nose_x + side * half_width * 0.35, nose_y + 2.2),
            0.55,
        )
        for side in SIDES
    )
    drawing.add(skin - 40.0, *wings)
    nostrils = (_ellipse(nose_x + side * half_width * 0.5, nose_y + 1.4, 1.4, 0.85, side * 0.35) for side in SIDES)
    drawing.add(skin * 0.35, *nostrils)
    drawing.add(skin + 14.0, _ellipse(nose_x, nose_y - 0.6, 1.6, 1.1))
    drawing.keypoints["nose_tip"] = _xy(nose_x, nose_y)


def _lid_heights(params: dict, layout: _Layout, t) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lid heights at eye parameter t (-1 inner corner .. 1 outer corner)."""
    t = np.clip(t, -1.0, 1.0)
    corner_line = _col(params["ey"]) - _col(params["tilt"]) * t
    return (
        corner_line - _col(layout.upper_lid) * (1.0 - t * t) ** 0.7 * (1.0 - 0.12 * t),
        corner_line + _col(layout.lower_lid) * (1.0 - t * t) ** 0.85,
    )


def _eyes(drawing: _Drawing, params: dict, layout: _Layout) -> None:
    """White almond, iris and pupil clipped to the lids, catchlight, lower lid, crease, upper lid; keypoints."""
    eye_y, half_width, tilt = params["ey"], params["ew"], params["tilt"]
    iris_radius = params["iris"] * half_width
    upper, lower = _lid_heights(params, layout, _CURVE_T)
    whites, irises, pupils, catchlights, lower_lids, creases, upper_lids = ([] for _ in range(7))
    for (side, name), eye_x in zip(EYE_SIDES, layout.eye_x):
        xs = _col(eye_x) + side * _col(half_width) * _CURVE_T
        whites.append(_closed(xs, upper, lower))
        look_x = eye_x + side * params["gaze"] * half_width
        for discs, radius in ((irises, iris_radius), (pupils, iris_radius * params["pupil"])):
            disc = _ellipse(look_x, eye_y, radius, radius)
            top, bottom = _lid_heights(params, layout, side * (disc[..., 0] - _col(eye_x)) / _col(half_width))
            disc[..., 1] = np.clip(disc[..., 1], top, bottom)
            discs.append(disc)
        catchlights.append(_ellipse(look_x - 0.5 * iris_radius, eye_y - 0.5 * iris_radius, 0.5, 0.5))
        lower_lids.append(_ribbon(_xy(xs, lower + 0.15), 0.35))
        crease_y = upper[:, 3:-3] - 1.6 - 0.5 * _col(layout.upper_lid)
        creases.append(_ribbon(_xy(xs[:, 3:-3], crease_y), 0.3))
        upper_lids.append(_ribbon(_xy(xs, upper - 0.25), _LASH_WIDTH))
        drawing.keypoints[f"{name}_eye_center"] = _xy(look_x, eye_y)
        drawing.keypoints[f"{name}_eye_inner_corner"] = _xy(eye_x - side * half_width, eye_y + tilt)
        drawing.keypoints[f"{name}_eye_outer_corner"] = _xy(eye_x + side * half_width, eye_y - tilt)
    skin = params["skin"]
    drawing.add(params["sclera"], *whites)
    drawing.add(params["iris_c"], *irises)
    drawing.add(params["pupil_c"], *pupils)
    drawing.add(250.0, *catchlights)
    drawing.add(skin - 30.0, *lower_lids)
    drawing.add(skin - 25.0, *creases)
    drawing.add(np.minimum(params["brow"], skin * 0.3), *upper_lids)


def _mouth(drawing: _Drawing, params: dict, layout: _Layout) -> None:
    """Lips, the line between them, the open cavity and teeth; the mouth's keypoints."""
    t = _CURVE_T
    smile, asym, open_by = _col(params["smile"]), _col(params["asym"]), _col(params["mouth_open"])
    y_left, y_right = _col(layout.mouth_y) - smile - asym, _col(layout.mouth_y) - smile + asym  # person's left = +x
    arc = 1.0 - t * t  # 0 at the corners, 1 in the middle
    lip_line = y_right + (y_left - y_right) * (t + 1.0) / 2.0 + smile * arc
    opening_shape = arc ** (1.0 - 0.5 * _col(params["mouth_round"]))
    lip_lift = _col(params["lip_raise"]) * np.exp(-(((t - 0.45 * np.copysign(1.0, asym)) / 0.5) ** 2)) * np.sqrt(arc)
    inner_up = lip_line - 0.38 * open_by * opening_shape - lip_lift
    inner_low = lip_line + 0.62 * open_by * opening_shape
    press = 1.0 - _col(params["lip_press"])
    outer_up = inner_up - _col(params["tu"]) * press * arc**0.55 * _BOW
    outer_low = inner_low + _col(params["tl"]) * press * arc**0.6
    xs = _col(layout.mouth_x) + _col(layout.mouth_half_width) * t
    skin = params["skin"]
    drawing.add(skin - params["lip_d"], _closed(xs, outer_up, outer_low))
    drawing.add(skin * 0.3, _ribbon(_xy(xs, (inner_up + inner_low) / 2.0), 0.45))
    opening = (inner_low - inner_up).max(1)
    drawing.add(params["cavity_c"], _closed(xs, inner_up, inner_low), on=opening > 0.6)
    teeth_low = np.maximum(np.minimum(inner_up + 2.6, inner_low - 0.3 * (inner_low - inner_up > 3.5)), inner_up)
    teeth = _closed(xs[:, 2:-2], inner_up[:, 2:-2], teeth_low[:, 2:-2])
    drawing.add(params["teeth_c"], teeth, on=params["teeth"] & (opening > 1.2))
    centre = len(t) // 2
    drawing.keypoints["mouth_left_corner"] = _xy(xs[:, -1], lip_line[:, -1])
    drawing.keypoints["mouth_right_corner"] = _xy(xs[:, 0], lip_line[:, 0])
    drawing.keypoints["mouth_center_top_lip"] = _xy(xs[:, centre], outer_up[:, centre])
    drawing.keypoints["mouth_center_bottom_lip"] = _xy(xs[:, centre], outer_low[:, centre])


# --- public API -------------------------------------------------------------------------------


def face_shapes(params: dict) -> tuple[list, dict[str, np.ndarray]]:
    """What to paint for a batch of faces, back to front, and their keypoints, in the face frame.

    Returns ``[(tone (n,), drawn (n,) bool or None, [polygons (n, m, 2), ...]), ...]`` (polygons
    of one entry never overlap, so they are filled in one call) and ``{keypoint name: (n, 2)}``.
    """
    drawing = _Drawing(len(params["skin"]))
    layout = _layout(params)
    _backdrop(drawing, params)
    _back_hair(drawing, params)
    _ears(drawing, params)
    outline = _head(drawing, params)
    # eye sockets, wrinkles and folds (under the features), then the hair over the forehead
    _eye_sockets(drawing, params, layout)
    _forehead_lines(drawing, params)
    _frown_lines(drawing, params)
    _smile_folds(drawing, params, layout)
    _nose_wrinkles(drawing, params, layout)
    _front_hair(drawing, params, outline)
    _brows(drawing, params, layout)
    _nose(drawing, params, layout)
    _eyes(drawing, params, layout)
    _mouth(drawing, params, layout)
    return drawing.layers, drawing.keypoints


def paint(canvases: np.ndarray, params: dict, size: int) -> np.ndarray:
    """Draw a batch of faces on uint8 canvases (n, S*size, S*size); return keypoints (n, 15, 2), size-pixel coords."""
    n = len(canvases)
    shapes, named = face_shapes(params)
    points = np.stack([named[name] for name in KEYPOINT_NAMES], 1)
    cos, sin = np.cos(params["rot"]) * params["scale"], np.sin(params["rot"]) * params["scale"]
    rotation_t = np.stack((np.stack((cos, sin), -1), np.stack((-sin, cos), -1)), 1)  # (n, 2, 2), transposed
    # shift: random, but limited so that every keypoint stays inside the frame
    placed = points @ rotation_t + FACE_CENTRE
    low = KEYPOINT_MARGIN - placed.min(1)
    high = (FRAME - 1.0 - KEYPOINT_MARGIN) - placed.max(1)
    wanted = np.stack((params["shift_x"], params["shift_y"]), 1) * SHIFT_UNITS
    origin = np.asarray(FACE_CENTRE) + np.where(low <= high, np.clip(wanted, low, high), (low + high) / 2.0)
    # frame units -> canvas pixels (pixel centres at integers at every resolution), fixed point
    unit = size / FRAME
    gain = SUPERSAMPLE * unit
    offset = gain * (origin + 0.5) - 0.5
    polys = [poly for _, _, group in shapes for poly in group]
    fixed = np.rint((np.concatenate(polys, 1) @ (rotation_t * gain) + offset[:, None, :]) * _FIX).astype(np.int32)
    plan, start = [], 0
    for tone, on, group in shapes:
        spans = []
        for poly in group:
            spans.append((start, start + poly.shape[1]))
            start += poly.shape[1]
        plan.append((tone.tolist(), None if on is None else on.tolist(), spans))
    bg = np.rint(params["bg"]).astype(int).tolist()
    for i in range(n):
        canvas, face = canvases[i], fixed[i]
        canvas[:] = bg[i]
        for tones, on, spans in plan:
            if on is None or on[i]:
                cv2.fillPoly(canvas, [face[a:b] for a, b in spans], tones[i], _LINE, SUBPIXEL_BITS)
    return (points @ rotation_t + origin[:, None, :] + 0.5) * unit - 0.5
