"""The SAM2S category vocabulary: 21 surgical instruments and 16 tissues.

The names and their order follow the paper (arXiv 2511.16618). The order matters: the
TSL class-embedding bank stores one text embedding per instrument in this order, so the
index of a name in :data:`INSTRUMENTS` is its class index.

Example:
    >>> from sam2s.data.vocabulary import category_kind, INSTRUMENTS
    >>> category_kind("grasper")
    'instrument'
    >>> INSTRUMENTS.index("hook")
    3
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "INSTRUMENTS",
    "TISSUES",
    "VOCABULARY",
    "CategoryKind",
    "category_kind",
    "check_category",
    "is_instrument",
    "is_tissue",
]

INSTRUMENTS: tuple[str, ...] = (
    "ligature",
    "grasper",
    "dissector-grasper",
    "hook",
    "needle driver",
    "bipolar forceps",
    "clip applier",
    "monopolar scissors",
    "prograsp forceps",
    "scissors",
    "bipolar",
    "suction",
    "needle holder",
    "snare",
    "catheter",
    "ultrasound probe",
    "vessel sealer",
    "grasping retractor",
    "suturing needle",
    "thread",
    "clamp",
)

TISSUES: tuple[str, ...] = (
    "cystic duct",
    "small intestine",
    "covered kidney",
    "kidney parenchyma",
    "colon",
    "hepatic vein",
    "liver ligament",
    "spleen",
    "connective tissue",
    "gallbladder",
    "GI tract",
    "polyp",
    "abdominal wall",
    "fat",
    "liver",
    "uterus",
)

#: Every name, instruments first.
VOCABULARY: tuple[str, ...] = INSTRUMENTS + TISSUES

CategoryKind = Literal["instrument", "tissue"]

_INSTRUMENT_SET = frozenset(INSTRUMENTS)
_TISSUE_SET = frozenset(TISSUES)


def is_instrument(name: str) -> bool:
    """Whether ``name`` is one of the 21 instrument names (exact spelling)."""
    return name in _INSTRUMENT_SET


def is_tissue(name: str) -> bool:
    """Whether ``name`` is one of the 16 tissue names (exact spelling)."""
    return name in _TISSUE_SET


def category_kind(name: str) -> CategoryKind:
    """Tell whether a vocabulary name is an instrument or a tissue.

    Args:
        name: a name from :data:`VOCABULARY`, spelled exactly as there.

    Returns:
        ``"instrument"`` or ``"tissue"``.

    Raises:
        ValueError: ``name`` is not in the vocabulary.
    """
    if name in _INSTRUMENT_SET:
        return "instrument"
    if name in _TISSUE_SET:
        return "tissue"
    raise ValueError(
        f"{name!r} is not a SAM2S category; use one of the names in sam2s.data.vocabulary.VOCABULARY "
        f"(instruments: {', '.join(INSTRUMENTS)}; tissues: {', '.join(TISSUES)})"
    )


def check_category(name: str) -> str:
    """Return ``name`` unchanged if it is in the vocabulary, else raise the error of :func:`category_kind`."""
    category_kind(name)
    return name
