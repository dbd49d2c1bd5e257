"""Where the model weights come from: the demo model, a local file, or a download on consent.

A download is only ever made after ``confirm(message)`` returned ``True`` and is kept only when
its SHA-256 matches the expected one; it goes to a temporary name first and is renamed into the
cache when complete, so an interrupted download never looks like a checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from SAM2SLib.backend import DEMO_CHECKPOINT

__all__ = ["RemoteWeights", "WeightsError", "defaultCacheDir", "resolveCheckpoint", "sha256OfFile"]


class WeightsError(RuntimeError):
    """Weights that cannot be used: missing file, refused download, wrong checksum."""


@dataclass(frozen=True)
class RemoteWeights:
    """A checkpoint to download: its address and the SHA-256 (hex) it must have."""

    url: str
    sha256: str

    def __post_init__(self) -> None:
        digest = self.sha256.lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise WeightsError(f"sha256 must be 64 hex digits, got {self.sha256!r}")
        object.__setattr__(self, "sha256", digest)

    @property
    def fileName(self) -> str:
        name = Path(self.url.split("?")[0]).name or "checkpoint.pt"
        return f"{self.sha256[:16]}-{name}"


def defaultCacheDir() -> Path:
    """``$SAM2S_CACHE_DIR`` or ``~/.cache/sam2s/weights``."""
    return Path(os.environ.get("SAM2S_CACHE_DIR", Path.home() / ".cache" / "sam2s" / "weights"))


def sha256OfFile(path: str | Path, chunkBytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunkBytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolveCheckpoint(
    spec: str | RemoteWeights | None,
    confirm: Callable[[str], bool] | None = None,
    cacheDir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> str | None:
    """Turn the user's weights choice into what ``sam2s.build_model(checkpoint=...)`` accepts.

    Args:
        spec: ``"demo"``, a local file path, a :class:`RemoteWeights`, or ``None`` (random weights).
        confirm: asked before any download; a download without it is refused.
        cacheDir: where downloads are kept (default :func:`defaultCacheDir`).
        progress: ``progress(bytesDone, bytesTotal)`` during a download (total 0 when unknown).

    Returns:
        ``"demo"``, ``None`` or a local file path.
    """
    if spec is None or spec == DEMO_CHECKPOINT:
        return spec
    if isinstance(spec, RemoteWeights):
        return _download(spec, confirm, Path(cacheDir) if cacheDir else defaultCacheDir(), progress)
    path = Path(str(spec)).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"checkpoint file {path} does not exist; choose the demo model or an existing .pt file"
        )
    return str(path)


def _download(remote: RemoteWeights, confirm, cacheDir: Path, progress) -> str:
    target = cacheDir / remote.fileName
    if target.is_file():
        if sha256OfFile(target) == remote.sha256:
            return str(target)
        target.unlink()  # a corrupted cache entry is worse than a new download
    message = f"Download the SAM2S weights from {remote.url} to {target}?"
    if confirm is None or not confirm(message):
        raise WeightsError(
            f"the download of {remote.url} was not confirmed; choose the demo model or a local file"
        )
    cacheDir.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".partial-", suffix=".pt", dir=cacheDir)
    try:
        digest = hashlib.sha256()
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(remote.url) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if digest.hexdigest() != remote.sha256:
            raise WeightsError(
                f"the file downloaded from {remote.url} has SHA-256 {digest.hexdigest()}, expected {remote.sha256}; "
                "it was discarded (check the address and the checksum)"
            )
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return str(target)
