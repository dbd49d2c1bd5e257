"""The category-name bank of temporal semantic learning: names + L2-normalised text embeddings.

The text encoder is only needed to build the bank; training and inference read the ``(K, D)``
embeddings, which are stored in the model checkpoint. :meth:`VocabularyBank.to_state_dict`
therefore holds only tensors, strings, lists of strings and ints, so a checkpoint containing it
loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sam2s.writers.base import write_atomically

__all__ = ["VocabularyBank"]

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class VocabularyBank:
    """Category names and their text embeddings.

    Attributes:
        class_names: the K category names, in class-index order.
        embeddings: ``(K, D)`` float32 text embeddings, L2-normalised on construction.
        encoder_name: which text encoder made them (e.g. ``"minilm:all-MiniLM-L6-v2"``).
        prompt_template: the template the names were put in before encoding.
    """

    class_names: tuple[str, ...]
    embeddings: torch.Tensor
    encoder_name: str
    prompt_template: str = "{name}"

    def __post_init__(self) -> None:
        names = tuple(str(name) for name in self.class_names)
        if len(set(names)) != len(names):
            duplicates = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(f"class names must be unique; repeated: {duplicates}")
        embeddings = torch.as_tensor(self.embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(names):
            raise ValueError(
                f"embeddings must have shape (K, D) with K = {len(names)} names, got {tuple(embeddings.shape)}"
            )
        if not torch.isfinite(embeddings).all():
            raise ValueError("embeddings contain NaN or infinite values")
        embeddings = embeddings.detach().to(torch.float32).cpu().contiguous()
        # Re-normalising unit rows would move their last bits; leave them so round trips are exact.
        if not torch.allclose(embeddings.norm(dim=-1), torch.ones(len(names)), rtol=0.0, atol=1e-6):
            embeddings = F.normalize(embeddings, dim=-1)
        # frozen dataclass: normalise the inputs once, here.
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "embeddings", embeddings)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def index(self, name: str) -> int:
        """Class index of ``name``; a clear error when the bank lacks it."""
        try:
            return self.class_names.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not in the vocabulary bank ({self.num_classes} names)") from None

    def to_state_dict(self) -> dict:
        """Plain tensors and strings only: safe for ``torch.load(weights_only=True)``."""
        return {
            "format_version": _FORMAT_VERSION,
            "class_names": list(self.class_names),
            "embeddings": self.embeddings.clone(),
            "encoder_name": self.encoder_name,
            "prompt_template": self.prompt_template,
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> VocabularyBank:
        """Inverse of :meth:`to_state_dict`."""
        missing = {"class_names", "embeddings", "encoder_name"} - set(state)
        if missing:
            raise ValueError(f"not a vocabulary-bank state dict: missing keys {sorted(missing)}")
        version = int(state.get("format_version", _FORMAT_VERSION))
        if version > _FORMAT_VERSION:
            raise ValueError(
                f"vocabulary bank format {version} is newer than this code supports ({_FORMAT_VERSION})"
            )
        return cls(
            class_names=tuple(state["class_names"]),
            embeddings=state["embeddings"],
            encoder_name=str(state["encoder_name"]),
            prompt_template=str(state.get("prompt_template", "{name}")),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bank to a ``.pt`` file (atomically) and return its path."""
        path = Path(path)
        write_atomically(path, lambda handle: torch.save(self.to_state_dict(), handle))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> VocabularyBank:
        """Read a bank written by :meth:`save` (loaded with ``weights_only=True``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary bank file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"{path} does not hold a vocabulary bank (found {type(state).__name__})")
        return cls.from_state_dict(state)

    @classmethod
    def from_embeddings_file(cls, path: str | os.PathLike, encoder_name: str | None = None) -> VocabularyBank:
        """Read precomputed embeddings: ``.npz`` or ``.pt`` holding names and a ``(K, D)`` array.

        Accepted keys: ``names`` or ``class_names`` for the names, ``embeddings`` for the array;
        optional ``encoder_name`` and ``prompt_template``. A file written by :meth:`save` works too.

        Args:
            path: the ``.npz`` or ``.pt`` file.
            encoder_name: overrides the file's encoder name (default: the file's, else
                ``"precomputed:<file name>"``).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"embeddings file not found: {path}")
        suffix = path.suffix.lower()
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                content = {key: archive[key] for key in archive.files}
        elif suffix in {".pt", ".pth"}:
            content = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(content, dict):
                raise ValueError(
                    f"{path} must hold a dict with names and embeddings, found {type(content).__name__}"
                )
        else:
            raise ValueError(f"unsupported embeddings file {path}: expected .npz or .pt")

        name_key = "class_names" if "class_names" in content else "names"
        if name_key not in content or "embeddings" not in content:
            raise ValueError(
                f"{path} must contain 'names' (or 'class_names') and 'embeddings'; found keys {sorted(content)}"
            )
        names = tuple(str(name) for name in _as_list(content[name_key]))
        file_encoder = _as_str(content.get("encoder_name")) or f"precomputed:{path.name}"
        template = _as_str(content.get("prompt_template")) or "{name}"
        return cls(
            class_names=names,
            embeddings=torch.as_tensor(np.asarray(content["embeddings"], dtype=np.float32))
            if not isinstance(content["embeddings"], torch.Tensor)
            else content["embeddings"],
            encoder_name=encoder_name or file_encoder,
            prompt_template=template,
        )


def _as_list(value) -> list:
    if isinstance(value, np.ndarray):
        return value.reshape(-1).tolist()
    if isinstance(value, str):
        raise TypeError("names must be a list of strings, not a single string")
    return list(value)


def _as_str(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return str(value.item())
    return str(value)
