"""Intensity windows that turn raw voxel values (CT Hounsfield units, MR signal) into uint8 grey.

A window maps ``[lower, upper]`` linearly onto ``[0, 255]`` and clips outside it. It always
works on a float copy, so the caller's array is never modified.

Presets (width/level in Hounsfield units, the usual radiology values):

=================  =======  =======
name               width    level
=================  =======  =======
``ct_soft_tissue``   400       40
``ct_abdomen``       400       50
``ct_lung``         1500     -600
``ct_bone``         1800      400
=================  =======  =======

``mr`` (also ``auto``) is a percentile window: the 0.5th and 99.5th percentiles of the
volume's intensities, estimated once per source so every slice uses the same mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "WINDOW_PRESETS",
    "IntensityWindow",
    "PercentileWindow",
    "WindowSpec",
    "resolve_window",
    "window_to_rgb",
]


@dataclass(frozen=True)
class IntensityWindow:
    """A fixed linear window: ``lower`` maps to 0, ``upper`` to 255, values outside are clipped."""

    lower: float
    upper: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lower) and np.isfinite(self.upper)) or self.upper <= self.lower:
            raise ValueError(
                f"an intensity window needs finite lower < upper, got ({self.lower}, {self.upper})"
            )

    @classmethod
    def from_width_level(cls, width: float, level: float) -> IntensityWindow:
        """The radiology convention: ``level`` is the centre, ``width`` the full range."""
        return cls(level - width / 2.0, level + width / 2.0)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Map ``values`` (any shape, any real dtype) to uint8 of the same shape; the input is untouched."""
        shifted = np.clip(values.astype(np.float64), self.lower, self.upper) - self.lower
        scaled = shifted * 255.0 / (self.upper - self.lower)
        return np.rint(scaled).astype(np.uint8)


@dataclass(frozen=True)
class PercentileWindow:
    """A window fitted to the data: from the ``lower_percentile`` to the ``upper_percentile`` intensity."""

    lower_percentile: float = 0.5
    upper_percentile: float = 99.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            raise ValueError(
                "percentiles must satisfy 0 <= lower < upper <= 100, got "
                f"({self.lower_percentile}, {self.upper_percentile})"
            )

    def fit(self, sample: np.ndarray) -> IntensityWindow:
        """Fix the window from a sample of the intensities (any shape)."""
        finite = sample[np.isfinite(sample)] if np.issubdtype(sample.dtype, np.floating) else sample.ravel()
        if finite.size == 0:
            return IntensityWindow(0.0, 1.0)
        lower, upper = np.percentile(finite, [self.lower_percentile, self.upper_percentile])
        if upper <= lower:
            # A constant image: any window shows it as one grey level; keep it valid.
            upper = lower + 1.0
        return IntensityWindow(float(lower), float(upper))


WINDOW_PRESETS: dict[str, IntensityWindow | PercentileWindow] = {
    "ct_soft_tissue": IntensityWindow.from_width_level(400, 40),
    "ct_abdomen": IntensityWindow.from_width_level(400, 50),
    "ct_lung": IntensityWindow.from_width_level(1500, -600),
    "ct_bone": IntensityWindow.from_width_level(1800, 400),
    "mr": PercentileWindow(0.5, 99.5),
    "auto": PercentileWindow(0.5, 99.5),
}

WindowSpec = str | tuple[float, float] | IntensityWindow | PercentileWindow | None


def _preset(name: str) -> IntensityWindow | PercentileWindow:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    for candidate in (key, f"ct_{key}"):
        if candidate in WINDOW_PRESETS:
            return WINDOW_PRESETS[candidate]
    raise ValueError(
        f"unknown intensity window {name!r}; use one of {sorted(WINDOW_PRESETS)} "
        "or an explicit (lower, upper) pair"
    )


def resolve_window(spec: WindowSpec, dtype: np.dtype, sample: Callable[[], np.ndarray]) -> IntensityWindow:
    """Turn a window specification into a fixed :class:`IntensityWindow`.

    Args:
        spec: a preset name, ``(lower, upper)``, a window object, or ``None`` for the default:
            uint8 data is shown as is, anything else gets the percentile (``mr``) window.
        dtype: dtype of the data the window will be applied to.
        sample: called at most once, only for percentile windows, to get intensities to fit on.
    """
    if spec is None:
        if np.dtype(dtype) == np.uint8:
            return IntensityWindow(0.0, 255.0)
        if np.dtype(dtype) == np.bool_:
            return IntensityWindow(0.0, 1.0)
        spec = WINDOW_PRESETS["mr"]
    if isinstance(spec, str):
        spec = _preset(spec)
    elif isinstance(spec, (tuple, list)):
        if len(spec) != 2:
            raise ValueError(f"an explicit window is (lower, upper), got {spec!r}")
        spec = IntensityWindow(float(spec[0]), float(spec[1]))
    if isinstance(spec, PercentileWindow):
        return spec.fit(sample())
    if isinstance(spec, IntensityWindow):
        return spec
    raise TypeError(f"cannot use {type(spec).__name__} as an intensity window")


def window_to_rgb(values: np.ndarray, window: IntensityWindow) -> np.ndarray:
    """``(H, W)`` intensities -> ``(H, W, 3)`` uint8 grey replicated to three channels."""
    grey = window.apply(values)
    return np.repeat(grey[:, :, None], 3, axis=2)
