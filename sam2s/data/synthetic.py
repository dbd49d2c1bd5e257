"""Synthetic surgical videos and medical volumes, seeded and reproducible.

Real surgical data sets cannot ship with the project, so tests, the demo and the smoke
training run on scenes drawn here. They are built to exercise what SAM2S is about, not to
look photographic:

* **Tissue**: pinkish-red multi-octave noise with darker vessels and specular highlights that
  slide with the camera (the light source is on the endoscope), seen through a moving camera
  (global translation and zoom) with vignetting.
* **Instruments** of named vocabulary categories: a shaded metallic or black shaft entering
  from a frame edge plus a category-specific tip (jaws, scissors, hook, probe head, snare loop,
  curved needle, thread). They enter, move, cross and occlude each other, leave the view and
  come back.
* **Tissue regions** (e.g. gallbladder, liver) with soft, ambiguous boundaries whose
  annotations are deliberately inconsistent: every frame is "annotated" by one of three
  annotators who place the boundary slightly differently (the ambiguity that ARL targets).
* **Smoke** (low-frequency haze) episodes and **motion blur** when the camera jerks.
* **Long mode**: thousands of frames rendered lazily, one at a time, with targets absent for
  hundreds of frames before they return, and slow appearance changes (lighting, tissue hue,
  instruments stained differently after each return).

Every frame and every mask comes from one object list (:attr:`SyntheticVideo.objects`) with an
explicit z-order: an object's mask is its shape minus whatever lies above it, and the image is
composited in the same order, so masks and pixels agree by construction.

Volumes are grey CT-like (HU) or MR-like (arbitrary units) images of deformed ellipsoid organs
with anisotropic spacing, an oblique direction matrix and a label map.

Writers put videos in the DAVIS layout with a categories file and volumes as NIfTI, which is
what :mod:`sam2s.data.datasets` reads. Command line: ``sam2s synthesize --out DIR``.

Example:
    >>> video = SyntheticVideo(SyntheticVideoConfig(num_frames=8, height=64, width=64), seed=0)
    >>> frame = video.frame(3)
    >>> frame.image.shape, frame.masks.shape
    ((64, 64, 3), (5, 64, 64))
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from sam2s.data.vocabulary import INSTRUMENTS, TISSUES, category_kind
from sam2s.writers.base import davis_palette, save_atomically, write_json

__all__ = [
    "SceneObject",
    "SyntheticDatasetSummary",
    "SyntheticFrame",
    "SyntheticVideo",
    "SyntheticVideoConfig",
    "SyntheticVolume",
    "add_arguments",
    "davis_palette",
    "make_synthetic_volume",
    "run",
    "write_davis_video",
    "write_nifti_volume",
    "write_synthetic_dataset",
]

# ----------------------------------------------------------------------------------------------
# Noise
# ----------------------------------------------------------------------------------------------


def _interpolation_matrix(n_out: int, n_grid: int) -> np.ndarray:
    """(n_out, n_grid) weights that smoothly interpolate a coarse grid to n_out samples.

    The smoothstep weight removes the creases of plain linear interpolation, so the result
    is classic value noise when applied to random grid values.
    """
    u = (np.arange(n_out) + 0.5) / n_out * (n_grid - 1)
    left = np.clip(np.floor(u).astype(np.int64), 0, n_grid - 2)
    t = u - left
    s = t * t * (3.0 - 2.0 * t)
    matrix = np.zeros((n_out, n_grid), dtype=np.float32)
    rows = np.arange(n_out)
    matrix[rows, left] = 1.0 - s
    matrix[rows, left + 1] = s
    return matrix


def fractal_noise(
    rng: np.random.Generator, shape: Sequence[int], cells: float, octaves: int = 4, persistence: float = 0.5
) -> np.ndarray:
    """Multi-octave value noise of any dimension, rescaled to [0, 1].

    Args:
        rng: random generator (consumed).
        shape: output shape, 2D (H, W) or 3D (D, H, W).
        cells: number of noise cells along the largest side at the coarsest octave.
        octaves: number of octaves; each doubles the frequency and multiplies the amplitude by
            ``persistence``.

    Returns:
        float32 array of ``shape`` in [0, 1].
    """
    total = np.zeros(tuple(shape), dtype=np.float32)
    amplitude = 1.0
    largest = max(shape)
    for octave in range(octaves):
        per_axis = [max(2, round(cells * 2**octave * n / largest) + 2) for n in shape]
        grid = rng.random(per_axis, dtype=np.float32)
        layer = grid
        # Interpolate one axis at a time: a chain of small matrix products, no per-pixel Python.
        for axis, n in enumerate(shape):
            layer = np.moveaxis(
                np.tensordot(_interpolation_matrix(n, per_axis[axis]), np.moveaxis(layer, axis, 0), 1),
                0,
                axis,
            )
        total += amplitude * layer
        amplitude *= persistence
    low, high = float(total.min()), float(total.max())
    return (total - low) / max(high - low, 1e-6)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _sample(texture: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``texture`` (Hw, Ww[, C]) on the axis-aligned grid ``ys`` x ``xs``.

    The camera only translates and zooms, so the sampling grid is separable: interpolate rows,
    then columns (two gathers instead of a full 2D resampling).
    """
    hw, ww = texture.shape[:2]
    ys = np.clip(ys, 0, hw - 1.001)
    xs = np.clip(xs, 0, ww - 1.001)
    y0 = ys.astype(np.int64)
    x0 = xs.astype(np.int64)
    wy = (ys - y0).astype(np.float32)
    wx = (xs - x0).astype(np.float32)
    extra = (1,) * (texture.ndim - 2)
    rows = texture[y0] * (1 - wy).reshape(-1, 1, *extra) + texture[y0 + 1] * wy.reshape(-1, 1, *extra)
    return rows[:, x0] * (1 - wx).reshape(1, -1, *extra) + rows[:, x0 + 1] * wx.reshape(1, -1, *extra)


# ----------------------------------------------------------------------------------------------
# Scene description
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneObject:
    """One object of a synthetic video.

    Attributes:
        obj_id: id in the annotation PNGs (1..255).
        category: vocabulary name.
        kind: ``"instrument"`` or ``"tissue"``.
        z: drawing order; larger is nearer the camera and hides smaller.
    """

    obj_id: int
    category: str
    kind: Literal["instrument", "tissue"]
    z: int


@dataclass(frozen=True)
class SyntheticFrame:
    """One rendered frame.

    Attributes:
        index: frame index.
        image: uint8 (H, W, 3) RGB.
        masks: bool (O, H, W) annotation masks in the order of ``SyntheticVideo.objects``;
            each excludes what lies above it in z-order (tissue masks carry the annotator's jitter).
        amodal_masks: bool (O, H, W) full shapes before occlusion.
        annotator: which of the simulated annotators drew this frame's tissue masks.
    """

    index: int
    image: np.ndarray
    masks: np.ndarray
    amodal_masks: np.ndarray
    annotator: int

    def label_map(self, obj_ids: Sequence[int]) -> np.ndarray:
        """uint8 (H, W) id map (masks are disjoint, so nothing is lost)."""
        labels = np.zeros(self.masks.shape[1:], dtype=np.uint8)
        for mask, obj_id in zip(self.masks, obj_ids):
            labels[mask] = obj_id
        return labels


@dataclass(frozen=True)
class InstrumentStyle:
    """How an instrument category is drawn (lengths are fractions of the frame's short side).

    Attributes:
        tip: tip shape.
        shaft_radius: half width of the shaft.
        tip_length: length of the jaws / hook / head.
        tip_radius: half width of a jaw / hook wire / probe head.
        max_opening: full jaw opening angle in radians.
        shaft_color: RGB in [0, 1]; black shafts mimic robotic instruments.
        tip_color: RGB of the tip.
    """

    tip: Literal["jaws", "scissors", "hook", "tube", "probe", "loop", "arc", "thread"]
    shaft_radius: float
    tip_length: float
    tip_radius: float
    max_opening: float
    shaft_color: tuple[float, float, float]
    tip_color: tuple[float, float, float]


_METAL = (0.72, 0.73, 0.75)
_DARK_METAL = (0.5, 0.51, 0.53)
_BLACK = (0.13, 0.13, 0.14)
_PLASTIC = (0.88, 0.88, 0.84)
_SUTURE = (0.42, 0.24, 0.58)

#: One style per instrument of the vocabulary, so categories look different from each other.
INSTRUMENT_STYLES: dict[str, InstrumentStyle] = {
    "ligature": InstrumentStyle("loop", 0.012, 0.07, 0.006, 0.0, _METAL, _SUTURE),
    "grasper": InstrumentStyle("jaws", 0.035, 0.12, 0.016, 0.6, _METAL, _DARK_METAL),
    "dissector-grasper": InstrumentStyle("scissors", 0.032, 0.11, 0.012, 0.4, _METAL, _DARK_METAL),
    "hook": InstrumentStyle("hook", 0.03, 0.09, 0.008, 0.0, _METAL, _METAL),
    "needle driver": InstrumentStyle("jaws", 0.04, 0.08, 0.02, 0.3, _BLACK, _METAL),
    "bipolar forceps": InstrumentStyle("jaws", 0.04, 0.13, 0.011, 0.5, _BLACK, _METAL),
    "clip applier": InstrumentStyle("jaws", 0.04, 0.1, 0.024, 0.35, _METAL, _METAL),
    "monopolar scissors": InstrumentStyle("scissors", 0.04, 0.1, 0.013, 0.5, _BLACK, _METAL),
    "prograsp forceps": InstrumentStyle("jaws", 0.04, 0.12, 0.02, 0.7, _BLACK, _DARK_METAL),
    "scissors": InstrumentStyle("scissors", 0.03, 0.12, 0.012, 0.45, _METAL, _METAL),
    "bipolar": InstrumentStyle("jaws", 0.028, 0.11, 0.009, 0.3, (0.6, 0.64, 0.72), _METAL),
    "suction": InstrumentStyle("tube", 0.03, 0.0, 0.03, 0.0, _METAL, _METAL),
    "needle holder": InstrumentStyle("jaws", 0.032, 0.07, 0.018, 0.25, _METAL, _DARK_METAL),
    "snare": InstrumentStyle("loop", 0.014, 0.1, 0.005, 0.0, _PLASTIC, _METAL),
    "catheter": InstrumentStyle("tube", 0.014, 0.0, 0.014, 0.0, _PLASTIC, _PLASTIC),
    "ultrasound probe": InstrumentStyle("probe", 0.035, 0.13, 0.05, 0.0, _DARK_METAL, (0.3, 0.3, 0.32)),
    "vessel sealer": InstrumentStyle("jaws", 0.045, 0.14, 0.022, 0.4, _BLACK, _DARK_METAL),
    "grasping retractor": InstrumentStyle("jaws", 0.04, 0.1, 0.02, 1.1, _BLACK, _METAL),
    "suturing needle": InstrumentStyle("arc", 0.0, 0.07, 0.006, 0.0, _METAL, (0.82, 0.82, 0.86)),
    "thread": InstrumentStyle("thread", 0.0, 0.0, 0.005, 0.0, _SUTURE, _SUTURE),
    "clamp": InstrumentStyle("jaws", 0.036, 0.15, 0.015, 0.25, _METAL, _METAL),
}

#: RGB of the tissue regions that have a characteristic colour; others get a random reddish one.
TISSUE_COLORS: dict[str, tuple[float, float, float]] = {
    "gallbladder": (0.55, 0.62, 0.38),
    "liver": (0.45, 0.14, 0.12),
    "fat": (0.86, 0.74, 0.42),
    "cystic duct": (0.78, 0.72, 0.6),
    "spleen": (0.42, 0.12, 0.2),
    "colon": (0.78, 0.55, 0.5),
    "small intestine": (0.82, 0.55, 0.52),
    "abdominal wall": (0.85, 0.62, 0.6),
    "connective tissue": (0.9, 0.8, 0.78),
    "uterus": (0.8, 0.45, 0.45),
    "polyp": (0.85, 0.42, 0.4),
}

_INSTANCE_TINTS = (
    (1.0, 1.0, 1.0),
    (0.86, 0.93, 1.12),
    (1.12, 1.02, 0.82),
    (0.95, 1.08, 0.95),
    (1.08, 0.9, 1.05),
)


@dataclass(frozen=True)
class SyntheticVideoConfig:
    """What a synthetic video contains.

    Attributes:
        num_frames: length of the video.
        height, width: frame size in pixels.
        num_instruments: instruments in the scene (ids 1..n).
        num_tissues: annotated tissue regions (ids after the instruments).
        instrument_categories: categories of the instruments; ``None`` draws them at random.
        tissue_categories: categories of the tissue regions; ``None`` uses gallbladder, liver,
            then random tissues.
        long: long-video mode: absences of hundreds of frames, slow appearance changes;
            needs ``num_frames >= 400``.
        port_swap: long mode only: the first two instruments (of different categories unless
            ``instrument_categories`` says otherwise) trade ports while both are out, so each
            comes back where the other was.
        smoke: add smoke episodes.
        motion_blur: blur frames when the camera jerks.
        camera_motion: move and zoom the camera; off gives a static view (tests of annotation
            jitter and of tracking without global motion).
        num_annotators: simulated annotators whose tissue boundaries disagree.
    """

    num_frames: int = 48
    height: int = 256
    width: int = 256
    num_instruments: int = 3
    num_tissues: int = 2
    instrument_categories: tuple[str, ...] | None = None
    tissue_categories: tuple[str, ...] | None = None
    long: bool = False
    port_swap: bool = False
    smoke: bool = True
    motion_blur: bool = True
    camera_motion: bool = True
    num_annotators: int = 3

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.height < 16 or self.width < 16:
            raise ValueError(f"need num_frames >= 1 and frames of at least 16x16; got {self}")
        if self.long and self.num_frames < 400:
            raise ValueError(
                f"long mode needs num_frames >= 400 to hold absences of hundreds of frames (got {self.num_frames})"
            )
        if self.port_swap and not (self.long and self.num_instruments >= 2):
            raise ValueError("port_swap needs long mode and at least 2 instruments")
        if self.num_instruments + self.num_tissues > 255:
            raise ValueError("at most 255 objects fit in a palette PNG")
        for name, wanted, kind in (
            ("instrument_categories", self.instrument_categories, "instrument"),
            ("tissue_categories", self.tissue_categories, "tissue"),
        ):
            if wanted is not None:
                if any(category_kind(c) != kind for c in wanted):
                    raise ValueError(f"{name} must hold {kind} names from the vocabulary, got {wanted}")
                count = self.num_instruments if kind == "instrument" else self.num_tissues
                if len(wanted) != count:
                    raise ValueError(f"{name} has {len(wanted)} names for {count} objects")


@dataclass
class _InstrumentTrack:
    """Per-frame motion of one instrument (all arrays have one entry per frame)."""

    style: InstrumentStyle
    entry: np.ndarray  # (T, 2) x, y of the port: where the shaft crosses the frame border
    aim: np.ndarray  # (2,) x, y of the point the shaft points at on average (from the first port)
    angle: np.ndarray  # (T,) shaft direction, radians, pointing into the frame
    presence: np.ndarray  # (T,) 1 while inserted, 0 while out, ramps between
    reach: np.ndarray  # (T,) how deep the shaft goes through its port when fully inserted, pixels
    depth: np.ndarray  # (T,) distance from the entry to the tip along the shaft, pixels
    opening: np.ndarray  # (T,) jaw opening in [0, 1]
    tint: np.ndarray  # (T, 3) colour multiplier (instance tint, stains after a return)
    wiggle_phase: np.ndarray  # (T,) phase of a thread's waves


@dataclass
class _TissueRegion:
    field: np.ndarray  # (Hw, Ww) world-space signed field; the boundary is field == 0
    color: np.ndarray  # (Hw, Ww, 3) world-space colour


def _presence_intervals(
    rng: np.random.Generator, num_frames: int, index: int, long: bool
) -> list[tuple[int, int]]:
    """Frame intervals [start, end) during which an instrument is inserted."""
    if long:
        intervals = []
        t = 0 if index == 0 else int(rng.integers(0, 300))
        while t < num_frames:
            end = min(num_frames, t + int(rng.integers(120, 400)))
            intervals.append((t, end))
            t = end + int(rng.integers(150, 500))  # absences of hundreds of frames
        return intervals
    # Short mode: the first instrument leaves and comes back, the second enters late, the
    # rest stay; with more instruments, random single intervals.
    n = num_frames
    if index == 0:
        return [(0, max(1, int(0.35 * n))), (min(n - 1, int(0.6 * n)), n)]
    if index == 1:
        return [(int(0.2 * n), n)]
    if index == 2:
        return [(0, n)]
    start = int(rng.integers(0, max(1, n // 2)))
    return [(start, n if rng.random() < 0.5 else max(start + 1, int(rng.integers(start + 1, n + 1))))]


def _envelope(num_frames: int, intervals: list[tuple[int, int]], ramp: int) -> np.ndarray:
    """1 while inserted, 0 while out, with linear ramps of ``ramp`` frames at entries and exits.

    A ramp is skipped at frame 0 and at the last frame, so an instrument present at the start
    is already in view there.
    """
    env = np.zeros(num_frames, dtype=np.float64)
    for start, end in intervals:
        env[start:end] = 1.0
        if start > 0:
            k = min(ramp, end - start)
            env[start : start + k] = np.linspace(1.0 / (k + 1), k / (k + 1), k)
        if end < num_frames:
            k = min(ramp, end - start)
            env[end - k : end] = np.minimum(env[end - k : end], np.linspace(k / (k + 1), 1.0 / (k + 1), k))
    return env


def _smooth_path(
    rng: np.random.Generator, num_frames: int, periods: tuple[float, float], terms: int = 3
) -> np.ndarray:
    """A smooth zero-mean path in [-1, 1]: a sum of sinusoids with random periods and phases."""
    t = np.arange(num_frames, dtype=np.float64)
    path = np.zeros(num_frames)
    for _ in range(terms):
        period = rng.uniform(*periods)
        path += np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.5, 1.0)
    return path / terms


# ----------------------------------------------------------------------------------------------
# Geometry of instrument parts
# ----------------------------------------------------------------------------------------------


@dataclass
class _Part:
    """One drawable piece: distance field, radius (may vary per pixel) and shading coordinate."""

    distance: np.ndarray  # (H, W) distance to the part's centre line
    radius: np.ndarray | float
    across: np.ndarray  # (H, W) signed offset from the centre line, for cylinder shading
    color: np.ndarray  # (3,)


def _segment(
    xx: np.ndarray, yy: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance to segment a->b, position along it in [0, 1], and signed perpendicular offset."""
    d = b - a
    length2 = max(float(d @ d), 1e-9)
    px = xx - a[0]
    py = yy - a[1]
    along = np.clip((px * d[0] + py * d[1]) / length2, 0.0, 1.0)
    ex = px - along * d[0]
    ey = py - along * d[1]
    across = (py * d[0] - px * d[1]) / math.sqrt(length2)
    return np.sqrt(ex * ex + ey * ey), along, across


def _capsule(xx, yy, a, b, r0: float, r1: float, color) -> _Part:
    distance, along, across = _segment(xx, yy, a, b)
    return _Part(distance, r0 + (r1 - r0) * along, across, np.asarray(color, dtype=np.float32))


def _arc(xx, yy, centre, radius: float, thickness: float, start: float, sweep: float, color) -> _Part:
    """A circular arc (full ring if ``sweep`` >= 2*pi) of wire radius ``thickness``."""
    dx = xx - centre[0]
    dy = yy - centre[1]
    rho = np.sqrt(dx * dx + dy * dy)
    distance = np.abs(rho - radius)
    if sweep < 2 * np.pi:
        rel = np.mod(np.arctan2(dy, dx) - start, 2 * np.pi)
        outside = rel > sweep
        ends = [centre + radius * np.array([np.cos(a), np.sin(a)]) for a in (start, start + sweep)]
        to_end = np.minimum(*[np.hypot(xx - e[0], yy - e[1]) for e in ends])
        distance = np.where(outside, to_end, distance)
    return _Part(distance, thickness, rho - radius, np.asarray(color, dtype=np.float32))


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _instrument_parts(track: _InstrumentTrack, t: int, xx, yy, short_side: int) -> list[_Part]:
    """The parts of one instrument at frame ``t``, back to front."""
    style = track.style
    direction = np.array([math.cos(track.angle[t]), math.sin(track.angle[t])])
    normal = np.array([-direction[1], direction[0]])
    tip = track.entry[t] + track.depth[t] * direction
    far = tip - 3.0 * short_side * direction  # the shaft runs out of the frame
    shaft_r = style.shaft_radius * short_side
    tip_len = style.tip_length * short_side
    tip_r = max(style.tip_radius * short_side, 0.8)
    base = tip - tip_len * direction
    tint = track.tint[t]
    shaft_color = np.asarray(style.shaft_color) * tint
    tip_color = np.asarray(style.tip_color) * tint
    parts: list[_Part] = []

    if style.tip == "thread":
        # A wavy thread from outside the frame to its free end.
        points = [far + (tip - far) * k / 12 for k in range(13)]
        wave = 0.03 * short_side
        points = [
            p + normal * wave * math.sin(k * 1.3 + track.wiggle_phase[t]) * (k > 0)
            for k, p in enumerate(points)
        ]
        return [_capsule(xx, yy, p, q, tip_r, tip_r, tip_color) for p, q in itertools.pairwise(points)]
    if style.tip == "arc":
        # A free curved needle around the "tip" point, opening away from the entry.
        return [_arc(xx, yy, tip, tip_len, tip_r, track.angle[t] + np.pi / 2, np.pi * 1.1, tip_color)]

    if style.tip == "tube":
        return [_capsule(xx, yy, far, tip, shaft_r, shaft_r, shaft_color)]
    parts.append(_capsule(xx, yy, far, base, shaft_r, shaft_r, shaft_color))
    if style.tip == "probe":
        parts.append(_capsule(xx, yy, base, tip, tip_r, tip_r * 0.9, tip_color))
    elif style.tip == "hook":
        parts.append(_capsule(xx, yy, base, tip, tip_r, tip_r, tip_color))
        parts.append(
            _capsule(
                xx,
                yy,
                tip,
                tip + 0.45 * tip_len * normal - 0.15 * tip_len * direction,
                tip_r,
                tip_r,
                tip_color,
            )
        )
    elif style.tip == "loop":
        parts.append(
            _capsule(xx, yy, base, base + 0.2 * tip_len * direction, shaft_r, shaft_r * 0.8, tip_color)
        )
        parts.append(
            _arc(xx, yy, base + tip_len * 0.5 * direction, tip_len * 0.5, tip_r, 0.0, 2 * np.pi, tip_color)
        )
    else:  # jaws, scissors
        half = 0.5 * style.max_opening * track.opening[t]
        wrist = base - 0.8 * shaft_r * direction
        parts.append(_capsule(xx, yy, wrist, base, shaft_r * 1.05, shaft_r * 0.9, tip_color * 0.85))
        for sign in (-1.0, 1.0):
            if style.tip == "jaws":
                end = base + tip_len * _rotate(direction, sign * half)
                parts.append(_capsule(xx, yy, base, end, tip_r, tip_r * 0.6, tip_color))
            else:  # curved blades bending to the same side
                mid = base + 0.5 * tip_len * _rotate(direction, sign * half)
                end = mid + 0.5 * tip_len * _rotate(direction, sign * half + 0.35)
                parts.append(_capsule(xx, yy, base, mid, tip_r, tip_r * 0.85, tip_color))
                parts.append(_capsule(xx, yy, mid, end, tip_r * 0.85, tip_r * 0.45, tip_color))
    return parts


def _shade(part: _Part) -> tuple[np.ndarray, np.ndarray]:
    """Coverage alpha (H, W) and lit colour (H, W, 3) of a part, shaded as a metal cylinder."""
    alpha = np.clip(part.radius - part.distance + 0.5, 0.0, 1.0)
    u = np.clip(part.across / np.maximum(part.radius, 0.5), -1.0, 1.0)
    facing = np.sqrt(1.0 - u * u)  # cylinder normal towards the camera
    diffuse = 0.35 + 0.65 * facing
    specular = 0.55 * np.exp(-(((u - 0.35) / 0.18) ** 2))  # light slightly off-axis
    color = part.color[None, None, :] * diffuse[..., None] + specular[..., None]
    return alpha, color


# ----------------------------------------------------------------------------------------------
# Video
# ----------------------------------------------------------------------------------------------


class SyntheticVideo:
    """A synthetic surgical video, rendered lazily frame by frame.

    Construction draws everything random once (world textures, object list, per-frame motion
    schedules: a few arrays of length ``num_frames``); :meth:`frame` renders frame ``t`` from
    those and a per-frame generator seeded by ``(seed, t)``, so any frame can be rendered
    alone, in any order, and always comes out the same. Memory stays small for any length.

    Args:
        config: scene content and size.
        seed: random seed; equal seeds give identical videos.
    """

    WORLD_MARGIN = 1.5  # world texture side / frame side: room for camera motion

    def __init__(self, config: SyntheticVideoConfig | None = None, seed: int = 0) -> None:
        self.config = config or SyntheticVideoConfig()
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        cfg = self.config
        h, w = cfg.height, cfg.width
        self._short_side = min(h, w)
        self._world_shape = (math.ceil(h * self.WORLD_MARGIN), math.ceil(w * self.WORLD_MARGIN))

        instrument_names = cfg.instrument_categories or tuple(
            INSTRUMENTS[i]
            for i in rng.choice(
                len(INSTRUMENTS), cfg.num_instruments, replace=cfg.num_instruments > len(INSTRUMENTS)
            )
        )
        if cfg.tissue_categories is not None:
            tissue_names = cfg.tissue_categories
        else:
            others = [t for t in TISSUES if t not in ("gallbladder", "liver")]
            extra = [others[i] for i in rng.permutation(len(others))]
            tissue_names = tuple((["gallbladder", "liver"] + extra * 8)[: cfg.num_tissues])

        # Tissues lie below instruments; instruments get a random order among themselves.
        instrument_z = cfg.num_tissues + rng.permutation(cfg.num_instruments)
        tissue_z = rng.permutation(cfg.num_tissues)
        objects = [
            SceneObject(i + 1, name, "instrument", int(instrument_z[i]))
            for i, name in enumerate(instrument_names)
        ]
        objects += [
            SceneObject(cfg.num_instruments + i + 1, name, "tissue", int(tissue_z[i]))
            for i, name in enumerate(tissue_names)
        ]
        self.objects: tuple[SceneObject, ...] = tuple(objects)

        self._build_world(rng)
        self._build_camera(rng)
        self._tissues = [
            self._make_tissue_region(rng, obj.category) for obj in objects if obj.kind == "tissue"
        ]
        self._annotators = [
            (offset, 0.08 * (fractal_noise(rng, self._world_shape, cells=6, octaves=2) - 0.5))
            for offset in np.linspace(-0.05, 0.05, cfg.num_annotators)
        ]
        self._tracks: list[_InstrumentTrack] = []
        #: first frame of the traded ports (``port_swap``), or ``None``
        self.port_swap_frame: int | None = None
        for index, obj in enumerate(o for o in objects if o.kind == "instrument"):
            # Later instruments aim at a point on the first one's shaft, so that they cross it.
            aim = None
            if self._tracks:
                first = self._tracks[0]
                aim = first.entry[0] + rng.uniform(0.4, 0.8) * (first.aim - first.entry[0])
            self._tracks.append(self._make_track(rng, index, obj.category, aim))
        if cfg.port_swap:
            self._swap_ports(*self._tracks[:2])
        self._build_effects(rng)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self._xx, self._yy = xx + 0.5, yy + 0.5
        radius2 = ((xx - w / 2) / (0.75 * w)) ** 2 + ((yy - h / 2) / (0.75 * h)) ** 2
        self._vignette = (1.0 - 0.45 * np.clip(radius2, 0, 1.5) ** 1.5).astype(np.float32)

    # -- construction ----------------------------------------------------------------------

    def _build_world(self, rng: np.random.Generator) -> None:
        shape = self._world_shape
        base = fractal_noise(rng, shape, cells=5, octaves=5, persistence=0.55)
        blotches = fractal_noise(rng, shape, cells=3, octaves=2)
        ridges = 1.0 - np.abs(2.0 * fractal_noise(rng, shape, cells=4, octaves=4) - 1.0)
        vessels = _smoothstep(0.9, 0.97, ridges)
        rgb = np.stack(
            [0.66 + 0.22 * base, 0.26 + 0.14 * base + 0.06 * blotches, 0.28 + 0.12 * base],
            axis=-1,
        )
        dark_red = np.array([0.45, 0.06, 0.09], dtype=np.float32)
        rgb = rgb * (1 - 0.7 * vessels[..., None]) + dark_red * (0.7 * vessels[..., None])
        self._world_rgb = rgb.astype(np.float32)
        # Wet-tissue speculars: small bright blobs where fine noise peaks.
        self._speculars = _smoothstep(0.8, 0.9, fractal_noise(rng, shape, cells=30, octaves=2)).astype(
            np.float32
        )

    def _build_camera(self, rng: np.random.Generator) -> None:
        cfg = self.config
        n = cfg.num_frames
        periods = (150.0, 900.0) if cfg.long else (30.0, 120.0)
        amp_y = 0.12 * cfg.height
        amp_x = 0.12 * cfg.width
        cy = amp_y * _smooth_path(rng, n, periods)
        cx = amp_x * _smooth_path(rng, n, periods)
        # Quick camera jerks: the source of motion blur.
        jerks = max(1, n // 300) if cfg.long else 1
        for _ in range(jerks if n >= 8 else 0):
            start = int(rng.integers(n // 4, max(n // 4 + 1, n - 6)))
            step = rng.uniform(-1, 1, size=2) * 0.05 * np.array([cfg.height, cfg.width])
            ramp = np.clip(np.arange(n) - start, 0, 3) / 3.0
            cy += step[0] * ramp - step[0] * np.clip(np.arange(n) - start - 6, 0, 6) / 6.0
            cx += step[1] * ramp - step[1] * np.clip(np.arange(n) - start - 6, 0, 6) / 6.0
        self._camera_y = cy
        self._camera_x = cx
        self._zoom = 1.0 + 0.08 * _smooth_path(rng, n, periods, terms=2)
        if not cfg.camera_motion:
            # Random draws above still happen, so the rest of the scene is the same with or without.
            self._camera_y = np.zeros(n)
            self._camera_x = np.zeros(n)
            self._zoom = np.ones(n)

    def _make_tissue_region(self, rng: np.random.Generator, category: str) -> _TissueRegion:
        hw, ww = self._world_shape
        yy, xx = np.mgrid[0:hw, 0:ww].astype(np.float32)
        # Centre in the part of the world the camera sees most.
        cy = hw / 2 + rng.uniform(-0.22, 0.22) * self.config.height
        cx = ww / 2 + rng.uniform(-0.22, 0.22) * self.config.width
        ry = rng.uniform(0.16, 0.28) * self.config.height
        rx = rng.uniform(0.16, 0.28) * self.config.width
        theta = rng.uniform(0, np.pi)
        c, s = math.cos(theta), math.sin(theta)
        u = ((xx - cx) * c + (yy - cy) * s) / rx
        v = (-(xx - cx) * s + (yy - cy) * c) / ry
        field_ = (
            1.0
            - np.sqrt(u * u + v * v)
            + 0.45 * (fractal_noise(rng, self._world_shape, cells=4, octaves=3) - 0.5)
        )
        base = np.asarray(
            TISSUE_COLORS.get(
                category, (rng.uniform(0.6, 0.85), rng.uniform(0.3, 0.5), rng.uniform(0.3, 0.45))
            )
        )
        texture = 0.8 + 0.4 * fractal_noise(rng, self._world_shape, cells=8, octaves=4)
        return _TissueRegion(
            field_.astype(np.float32), (base[None, None, :] * texture[..., None]).astype(np.float32)
        )

    def _make_track(
        self, rng: np.random.Generator, index: int, category: str, aim: np.ndarray | None
    ) -> _InstrumentTrack:
        cfg = self.config
        n, h, w = cfg.num_frames, cfg.height, cfg.width
        # Entry on a frame edge; instruments aim near the centre so that they cross.
        side = (
            ("left", "right", "bottom", "top")[(index + int(rng.integers(0, 2)) * 2) % 4]
            if index < 4
            else rng.choice(["left", "right", "bottom", "top"])
        )
        along = rng.uniform(0.25, 0.75)
        entry = {
            "left": np.array([0.0, along * h]),
            "right": np.array([float(w), along * h]),
            "top": np.array([along * w, 0.0]),
            "bottom": np.array([along * w, float(h)]),
        }[str(side)]
        target = np.array([w / 2, h / 2]) + rng.uniform(-0.12, 0.12, size=2) * np.array([w, h])
        if aim is not None:
            target = aim + rng.uniform(-0.04, 0.04, size=2) * np.array([w, h])
        to_target = target - entry
        base_angle = math.atan2(to_target[1], to_target[0])
        reach = float(np.hypot(*to_target))
        periods = (120.0, 600.0) if cfg.long else (20.0, 60.0)
        angle = base_angle + 0.25 * _smooth_path(rng, n, periods)
        inserted = reach * (1.1 + 0.2 * _smooth_path(rng, n, periods))
        intervals = _presence_intervals(rng, n, index, cfg.long)
        env = _envelope(n, intervals, ramp=10 if cfg.long else 3)
        opening = 0.5 + 0.5 * _smooth_path(rng, n, (8.0, 30.0))

        tint = np.tile(np.asarray(_INSTANCE_TINTS[index % len(_INSTANCE_TINTS)], dtype=np.float64), (n, 1))
        if cfg.long:
            # Appearance changes: after every return the instrument is stained differently.
            for start, end in intervals[1:]:
                stain = np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.7, 1.0)]) * rng.uniform(0.8, 1.1)
                tint[start:end] *= stain
        wiggle = np.cumsum(np.full(n, 0.15)) + rng.uniform(0, 2 * np.pi)
        return _InstrumentTrack(
            style=INSTRUMENT_STYLES[category],
            entry=np.tile(entry, (n, 1)),
            aim=target,
            angle=angle,
            presence=env,
            reach=inserted,
            depth=self._depth(env, inserted),
            opening=opening,
            tint=tint.astype(np.float32),
            wiggle_phase=wiggle,
        )

    def _depth(self, presence: np.ndarray, reach: np.ndarray) -> np.ndarray:
        outside = -0.6 * self._short_side  # far enough out that no part reaches the frame
        return outside + presence * (reach - outside)

    def _swap_ports(self, a: _InstrumentTrack, b: _InstrumentTrack) -> None:
        """From the first frame after both have been seen on which both are out, trade ports.

        Each keeps its own timing, jaw motion and look; the port, the shaft's sway and depth
        come from the other one. Nothing changes if the two are never out together.
        """
        seen_both = max(int(np.argmax(a.presence > 0)), int(np.argmax(b.presence > 0)))
        both_out = np.flatnonzero((a.presence == 0) & (b.presence == 0))
        both_out = both_out[both_out > seen_both]
        if not (a.presence > 0).any() or not (b.presence > 0).any() or not len(both_out):
            return
        t = int(both_out[0])
        for name in ("entry", "angle", "reach"):
            head_a, head_b = getattr(a, name)[t:].copy(), getattr(b, name)[t:].copy()
            getattr(a, name)[t:], getattr(b, name)[t:] = head_b, head_a
        a.depth, b.depth = self._depth(a.presence, a.reach), self._depth(b.presence, b.reach)
        self.port_swap_frame = t

    def _build_effects(self, rng: np.random.Generator) -> None:
        cfg = self.config
        n = cfg.num_frames
        t = np.arange(n)
        smoke = np.zeros(n)
        if cfg.smoke and n >= 4:
            episodes = [(int(0.45 * n), max(2, int(0.15 * n)))]
            if cfg.long:
                episodes = [
                    (int(s), int(rng.integers(30, 100))) for s in range(int(rng.integers(50, 200)), n, 300)
                ]
            for start, length in episodes:
                rise = np.clip((t - start) / max(1, length / 3), 0, 1) * np.clip(
                    (start + length - t) / max(1, length / 3), 0, 1
                )
                smoke = np.maximum(smoke, 0.55 * rise)
        self._smoke = smoke
        self._smoke_field = fractal_noise(rng, (cfg.height * 2, cfg.width * 2), cells=3, octaves=3).astype(
            np.float32
        )
        periods = (400.0, 1500.0) if cfg.long else (100.0, 200.0)
        self._gain = 1.0 + (0.15 if cfg.long else 0.05) * _smooth_path(rng, n, periods, terms=2)
        self._hue = (0.06 if cfg.long else 0.0) * _smooth_path(rng, n, periods, terms=2)

    # -- public ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.config.num_frames

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(o.obj_id for o in self.objects)

    @property
    def categories(self) -> dict[int, str]:
        return {o.obj_id: o.category for o in self.objects}

    def __iter__(self) -> Iterator[SyntheticFrame]:
        for t in range(len(self)):
            yield self.frame(t)

    def frame(self, index: int, hidden: Sequence[int] = ()) -> SyntheticFrame:
        """Render frame ``index``.

        Args:
            index: frame index in [0, num_frames).
            hidden: object ids to leave out (their masks come back empty); used to check that
                occluders really cover what lies beneath them.

        Returns:
            The frame with its masks.
        """
        cfg = self.config
        if not 0 <= index < cfg.num_frames:
            raise IndexError(f"frame {index} out of range for a {cfg.num_frames}-frame video")
        frame_rng = np.random.default_rng([self.seed, index])
        h, w = cfg.height, cfg.width
        hidden_set = {int(i) for i in hidden}

        zoom = self._zoom[index]
        hw, ww = self._world_shape
        ys = hw / 2 + self._camera_y[index] + (np.arange(h) + 0.5 - h / 2) / zoom
        xs = ww / 2 + self._camera_x[index] + (np.arange(w) + 0.5 - w / 2) / zoom

        image = _sample(self._world_rgb, ys, xs)
        amodal = np.zeros((len(self.objects), h, w), dtype=bool)
        annotator = int(frame_rng.integers(len(self._annotators)))
        offset, jitter = self._annotators[annotator]
        jitter_here = _sample(jitter, ys, xs)

        # Tissue regions, bottom to top: a soft blend for the image, a jittered threshold for the mask.
        tissue_objects = [(k, o) for k, o in enumerate(self.objects) if o.kind == "tissue"]
        for (k, obj), region in sorted(zip(tissue_objects, self._tissues), key=lambda pair: pair[0][1].z):
            if obj.obj_id in hidden_set:
                continue
            field_here = _sample(region.field, ys, xs)
            alpha = _smoothstep(-0.12, 0.12, field_here)[..., None]
            image = image * (1 - alpha) + _sample(region.color, ys, xs) * alpha
            amodal[k] = field_here + offset + jitter_here > 0

        # Speculars shift against the tissue: the light moves with the endoscope.
        parallax = 0.3
        spec = _sample(
            self._speculars, ys + parallax * self._camera_y[index], xs + parallax * self._camera_x[index]
        )
        image = image + spec[..., None] * (1.0 - image) * 0.9
        hue = self._hue[index]
        lighting = (
            self._vignette[..., None]
            * self._gain[index]
            * np.array([1 + hue, 1 - hue / 2, 1 - hue], np.float32)
        )
        image = image * lighting

        # Instruments, far to near.
        instrument_objects = [(k, o) for k, o in enumerate(self.objects) if o.kind == "instrument"]
        for (k, obj), track in sorted(zip(instrument_objects, self._tracks), key=lambda pair: pair[0][1].z):
            if obj.obj_id in hidden_set or track.depth[index] <= -0.5 * self._short_side:
                continue
            for part in _instrument_parts(track, index, self._xx, self._yy, self._short_side):
                alpha, color = _shade(part)
                image = image * (1 - alpha[..., None]) + (color * lighting) * alpha[..., None]
                amodal[k] |= alpha >= 0.5

        masks = _visible_masks(amodal, [o.z for o in self.objects])
        image = self._apply_smoke(image, index)
        if cfg.motion_blur:
            image = self._apply_motion_blur(image, index)
        image = image + frame_rng.normal(0.0, 0.008, size=image.shape).astype(np.float32)
        image_u8 = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        return SyntheticFrame(
            index=index, image=image_u8, masks=masks, amodal_masks=amodal, annotator=annotator
        )

    def _apply_smoke(self, image: np.ndarray, index: int) -> np.ndarray:
        strength = self._smoke[index]
        if strength <= 0:
            return image
        h, w = self.config.height, self.config.width
        drift = index * 0.7  # smoke drifts slowly across the view
        ys = np.arange(h) * 0.9 + (drift % h)
        xs = np.arange(w) * 0.9 + (0.5 * drift % w)
        haze = strength * (0.4 + 0.6 * _sample(self._smoke_field, ys, xs))[..., None]
        return image * (1 - haze) + np.array([0.86, 0.83, 0.82], np.float32) * haze

    def _apply_motion_blur(self, image: np.ndarray, index: int) -> np.ndarray:
        if index == 0:
            return image
        dy = (self._camera_y[index] - self._camera_y[index - 1]) * self._zoom[index]
        dx = (self._camera_x[index] - self._camera_x[index - 1]) * self._zoom[index]
        length = math.hypot(dy, dx)
        if length < 1.5:
            return image
        taps = min(math.ceil(length), 12)
        h, w = image.shape[:2]
        rows, cols = np.arange(h), np.arange(w)
        total = np.zeros_like(image)
        for k in range(taps):
            f = k / max(taps - 1, 1) - 0.5
            r = np.clip(rows + round(f * dy), 0, h - 1)
            c = np.clip(cols + round(f * dx), 0, w - 1)
            total += image[r][:, c]
        return total / taps


def _visible_masks(amodal: np.ndarray, z_order: Sequence[int]) -> np.ndarray:
    """Remove from each shape what the objects above it (larger z) cover."""
    visible = np.zeros_like(amodal)
    covered = np.zeros(amodal.shape[1:], dtype=bool)
    for k in sorted(range(len(z_order)), key=lambda i: -z_order[i]):
        visible[k] = amodal[k] & ~covered
        covered |= amodal[k]
    return visible


# ----------------------------------------------------------------------------------------------
# Volumes
# ----------------------------------------------------------------------------------------------

#: Organs drawn in synthetic volumes: (vocabulary name, CT HU, MR arbitrary units).
_ORGANS: tuple[tuple[str, float, float], ...] = (
    ("liver", 60.0, 420.0),
    ("spleen", 48.0, 620.0),
    ("kidney parenchyma", 150.0, 760.0),
    ("gallbladder", 8.0, 900.0),
    ("colon", 25.0, 300.0),
)


@dataclass(frozen=True)
class SyntheticVolume:
    """A synthetic grey volume with its label map.

    Attributes:
        image: float32 (D, H, W), index order (k, j, i): HU for CT, arbitrary units for MR.
        labels: uint8 (D, H, W); label ``n`` is organ ``categories[n]``.
        spacing: voxel size (i, j, k) in mm (SimpleITK order), anisotropic.
        origin: (x, y, z) of voxel (0, 0, 0) in mm.
        direction: 3x3 rotation; columns are the physical directions of i, j, k (oblique).
        modality: ``"ct"`` or ``"mr"``.
        categories: label value -> vocabulary name.
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    modality: Literal["ct", "mr"]
    categories: dict[int, str] = field(default_factory=dict)


def _random_rotation(rng: np.random.Generator, max_angle: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(0.5, 1.0) * max_angle
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def make_synthetic_volume(
    shape: tuple[int, int, int] = (32, 64, 64),
    modality: Literal["ct", "mr"] = "ct",
    num_organs: int = 3,
    spacing: tuple[float, float, float] = (0.8, 0.8, 2.5),
    oblique: bool = True,
    seed: int = 0,
) -> SyntheticVolume:
    """Draw a CT- or MR-like volume of smooth deformed-ellipsoid organs.

    Shapes are defined in millimetres, so with anisotropic ``spacing`` an organ spans fewer
    slices than rows. Where organs overlap, the one drawn first keeps the voxel.

    Args:
        shape: (D, H, W) voxels.
        modality: ``"ct"`` (HU: air -1000, fat -100, soft tissue about 40) or ``"mr"``
            (arbitrary units with a smooth multiplicative bias field).
        num_organs: organs to draw, at most 5 (liver, spleen, kidney parenchyma, gallbladder, colon).
        spacing: voxel size (i, j, k) in mm.
        oblique: tilt the direction matrix by 10-25 degrees about a random axis.
        seed: random seed.

    Returns:
        The volume, label map and geometry.
    """
    if modality not in ("ct", "mr"):
        raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}")
    if not 1 <= num_organs <= len(_ORGANS):
        raise ValueError(f"num_organs must be in [1, {len(_ORGANS)}], got {num_organs}")
    rng = np.random.default_rng(seed)
    d, h, w = shape
    sx, sy, sz = spacing
    zz, yy, xx = np.meshgrid(
        (np.arange(d) - d / 2) * sz, (np.arange(h) - h / 2) * sy, (np.arange(w) - w / 2) * sx, indexing="ij"
    )
    half_x, half_y, half_z = w * sx / 2, h * sy / 2, d * sz / 2

    # Body: an elliptic cylinder along k, with a fat rim.
    body_r = np.sqrt((xx / (0.9 * half_x)) ** 2 + (yy / (0.8 * half_y)) ** 2)
    body = body_r < 1.0
    fat = body & (body_r > 0.88)

    labels = np.zeros(shape, dtype=np.uint8)
    categories: dict[int, str] = {}
    warp = fractal_noise(rng, shape, cells=3, octaves=2) - 0.5
    first_angle = rng.uniform(0, 2 * np.pi)
    for label, (name, _, _) in enumerate(_ORGANS[:num_organs], start=1):
        # Organs sit around the body centre at spread-out angles, so they rarely collide.
        angle = first_angle + 2 * np.pi * (label - 1) / num_organs + rng.uniform(-0.3, 0.3)
        spread = 0.4 if num_organs > 1 else 0.0
        centre = np.array(
            [
                spread * math.cos(angle) * half_x,
                spread * 0.9 * math.sin(angle) * half_y,
                rng.uniform(-0.2, 0.2) * half_z,
            ]
        )
        radii = np.array(
            [rng.uniform(0.2, 0.3) * half_x, rng.uniform(0.2, 0.3) * half_y, rng.uniform(0.45, 0.75) * half_z]
        )
        rot = _random_rotation(rng, np.pi / 2)
        offsets = np.stack([xx - centre[0], yy - centre[1], zz - centre[2]], axis=-1) @ rot.T
        distance = np.sqrt(((offsets / radii) ** 2).sum(-1)) + 0.4 * warp * rng.uniform(0.6, 1.0)
        organ = (distance < 1.0) & body & (labels == 0) & ~fat
        labels[organ] = label
        categories[label] = name

    if modality == "ct":
        image = np.full(shape, -1000.0, dtype=np.float32)
        image[body] = 40.0
        image[fat] = -100.0
        for label, (_, hu, _) in enumerate(_ORGANS[:num_organs], start=1):
            image[labels == label] = hu
        image += 15.0 * (fractal_noise(rng, shape, cells=6, octaves=3) - 0.5)
        image += rng.normal(0.0, 12.0, size=shape).astype(np.float32)
    else:
        image = np.zeros(shape, dtype=np.float32)
        image[body] = 250.0
        image[fat] = 850.0
        for label, (_, _, au) in enumerate(_ORGANS[:num_organs], start=1):
            image[labels == label] = au
        bias = 0.8 + 0.4 * fractal_noise(rng, shape, cells=2, octaves=1)
        image = image * bias + np.abs(rng.normal(0.0, 20.0, size=shape)).astype(np.float32)

    direction = _random_rotation(rng, np.deg2rad(25)) if oblique else np.eye(3)
    origin = tuple(float(v) for v in rng.uniform(-200, 200, size=3))
    return SyntheticVolume(
        image=image.astype(np.float32),
        labels=labels,
        spacing=(float(sx), float(sy), float(sz)),
        origin=origin,  # type: ignore[arg-type]
        direction=direction,
        modality=modality,
        categories=categories,
    )


# ----------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------


def write_davis_video(video: SyntheticVideo, root: str | Path, name: str, progress: bool = True) -> None:
    """Write a video in the DAVIS layout: ``JPEGImages/<name>/%05d.jpg`` + ``Annotations/<name>/%05d.png``.

    Frames are rendered and written one at a time, so long videos need little memory. The
    categories are not written here (see :func:`write_synthetic_dataset`).

    Raises:
        FileExistsError: the video's folders already exist (stale frames would be mixed in).
    """
    root = Path(root)
    frame_dir = root / "JPEGImages" / name
    annotation_dir = root / "Annotations" / name
    for folder in (frame_dir, annotation_dir):
        if folder.exists():
            raise FileExistsError(f"{folder} already exists; write synthetic data to a fresh folder")
    palette = davis_palette().reshape(-1).tolist()
    obj_ids = video.obj_ids
    for frame in tqdm(video, total=len(video), desc=f"synthesize {name}", disable=not progress, leave=False):
        jpg = Image.fromarray(frame.image)
        png = Image.fromarray(frame.label_map(obj_ids), mode="P")
        png.putpalette(palette)
        save_atomically(
            frame_dir / f"{frame.index:05d}.jpg", partial(jpg.save, format="JPEG", quality=95, subsampling=0)
        )
        save_atomically(annotation_dir / f"{frame.index:05d}.png", partial(png.save, format="PNG"))


def write_nifti_volume(volume: SyntheticVolume, root: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``images/<name>.nii.gz`` and ``labels/<name>.nii.gz`` with spacing, origin and direction.

    CT is stored as int16 HU, MR as float32.

    Returns:
        The image and label paths.
    """
    import SimpleITK as sitk  # local: writing volumes is the only use here

    root = Path(root)
    paths = (root / "images" / f"{name}.nii.gz", root / "labels" / f"{name}.nii.gz")
    arrays = (
        np.round(volume.image).astype(np.int16)
        if volume.modality == "ct"
        else volume.image.astype(np.float32),
        volume.labels.astype(np.uint8),
    )
    for path, array in zip(paths, arrays):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(volume.spacing)
        image.SetOrigin(volume.origin)
        image.SetDirection(tuple(float(v) for v in volume.direction.reshape(-1)))
        save_atomically(path, lambda tmp, image=image: sitk.WriteImage(image, str(tmp)))
    return paths


@dataclass(frozen=True)
class SyntheticDatasetSummary:
    """What :func:`write_synthetic_dataset` wrote.

    Attributes:
        root: the dataset folder (a :class:`~sam2s.data.datasets.VideoDataset` root).
        videos: names of the videos.
        volume_root: folder of the volumes (a :class:`~sam2s.data.datasets.VolumeDataset` root), if any.
        volumes: names of the volumes.
    """

    root: Path
    videos: tuple[str, ...]
    volume_root: Path | None
    volumes: tuple[str, ...]


def write_synthetic_dataset(
    out_dir: str | Path,
    num_videos: int = 2,
    num_frames: int = 48,
    height: int = 256,
    width: int = 256,
    seed: int = 0,
    long: bool = False,
    volumes: int = 0,
    progress: bool = True,
) -> SyntheticDatasetSummary:
    """Write a synthetic data set: DAVIS-layout videos with ``categories.json``, and volumes.

    Layout::

        out_dir/JPEGImages/synth_000/00000.jpg ...
        out_dir/Annotations/synth_000/00000.png ...
        out_dir/categories.json
        out_dir/volumes/images/vol_000.nii.gz, out_dir/volumes/labels/vol_000.nii.gz
        out_dir/volumes/categories.json

    Volumes alternate CT and MR.

    Args:
        out_dir: folder to write into (created; existing videos of the same name are an error).
        num_videos: number of videos.
        num_frames: frames per video (long mode needs >= 400).
        height, width: frame size.
        seed: base seed; video ``i`` uses a seed derived from (seed, i).
        long: long-video mode.
        volumes: number of volumes.
        progress: show progress bars.

    Returns:
        What was written.
    """
    if num_videos < 0 or volumes < 0:
        raise ValueError("num_videos and volumes must be >= 0")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    names = tuple(f"synth_{i:03d}" for i in range(num_videos))
    categories: dict[str, dict[str, str]] = {}
    for i, name in enumerate(tqdm(names, desc="videos", disable=not progress or num_videos < 2)):
        video_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        config = SyntheticVideoConfig(num_frames=num_frames, height=height, width=width, long=long)
        video = SyntheticVideo(config, seed=video_seed)
        write_davis_video(video, root, name, progress=progress)
        categories[name] = {str(k): v for k, v in video.categories.items()}
    if names:
        categories_path = root / "categories.json"
        if categories_path.exists():
            categories = {**json.loads(categories_path.read_text()), **categories}
        write_json(categories_path, categories)

    volume_names = tuple(f"vol_{i:03d}" for i in range(volumes))
    volume_root = root / "volumes" if volumes else None
    volume_categories: dict[str, dict[str, str]] = {}
    for i, name in enumerate(volume_names):
        volume_seed = int(np.random.SeedSequence([seed, 10_000 + i]).generate_state(1)[0])
        volume = make_synthetic_volume(modality="ct" if i % 2 == 0 else "mr", seed=volume_seed)
        write_nifti_volume(volume, volume_root, name)  # type: ignore[arg-type]
        volume_categories[name] = {str(k): v for k, v in volume.categories.items()}
    if volume_root is not None:
        write_json(volume_root / "categories.json", volume_categories)
    return SyntheticDatasetSummary(root, names, volume_root, volume_names)


# ----------------------------------------------------------------------------------------------
# Command line: `sam2s synthesize`
# ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``sam2s synthesize`` to ``parser``."""
    parser.add_argument("--out", required=True, type=Path, help="folder to write the data set into")
    parser.add_argument("--videos", type=int, default=2, help="number of videos (default 2)")
    parser.add_argument(
        "--frames", type=int, default=48, help="frames per video (default 48; long mode >= 400)"
    )
    parser.add_argument("--height", type=int, default=256, help="frame height in pixels (default 256)")
    parser.add_argument("--width", type=int, default=256, help="frame width in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--long", action="store_true", help="long-video mode: absences of hundreds of frames")
    parser.add_argument("--volumes", type=int, default=0, help="number of NIfTI volumes to add (default 0)")


def run(args: argparse.Namespace) -> int:
    """Run ``sam2s synthesize`` with parsed ``args``; returns the exit status."""
    summary = write_synthetic_dataset(
        args.out,
        num_videos=args.videos,
        num_frames=args.frames,
        height=args.height,
        width=args.width,
        seed=args.seed,
        long=args.long,
        volumes=args.volumes,
    )
    print(f"wrote {len(summary.videos)} videos to {summary.root}")
    if summary.volume_root is not None:
        print(f"wrote {len(summary.volumes)} volumes to {summary.volume_root}")
    return 0
