"""Fetch the bundle's large files (``large_files.yml``) with an optional hash check.

``large_files.yml`` uses MONAI's layout, so ``python -m monai.bundle download_large_files
--bundle_path bundle`` reads it too::

    large_files:
      - path: models/sam2.1_hiera_tiny.pt      # relative to the bundle folder
        url: https://dl.fbaipublicfiles.com/...
        hash_val: "<hex digest>"               # quoted; only where the file's authors publish one
        hash_type: sha256                      # md5, sha1, sha256 or sha512

This module fetches one file by name (MONAI's command fetches all of them, about 1.6 GB for the
four SAM 2.1 sizes), writes to a hidden temporary file beside the target and renames it only
after the hash matches, so a failed or tampered download never leaves a file behind. Entries
without ``hash_val`` are fetched unchecked, with a warning; ``file://`` URLs work too.

Command line::

    python -m sam2s.bundle.download --bundle_root bundle --name sam2.1_hiera_tiny
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

__all__ = ["DownloadError", "HashMismatchError", "LargeFile", "fetch_large_files", "read_large_files"]

logger = logging.getLogger(__name__)

HASH_TYPES = ("md5", "sha1", "sha256", "sha512")
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """A large file that cannot be fetched (bad entry, unreachable URL, unknown name)."""


class HashMismatchError(DownloadError):
    """A fetched or existing file whose hash is not the one ``large_files.yml`` states."""


@dataclass(frozen=True)
class LargeFile:
    """One entry of ``large_files.yml``.

    Attributes:
        path: where the file goes, relative to the bundle folder.
        url: where it comes from (``https://``, ``http://`` or ``file://``).
        hash_val: the expected hex digest, or ``None`` where the authors publish none.
        hash_type: the digest algorithm of ``hash_val``.
    """

    path: str
    url: str
    hash_val: str | None = None
    hash_type: str = "sha256"

    @property
    def name(self) -> str:
        """The file name without its suffix, e.g. ``sam2.1_hiera_tiny``."""
        return Path(self.path).stem


def read_large_files(bundle_root: str | Path, file_name: str = "large_files.yml") -> list[LargeFile]:
    """Read and check the entries of ``bundle_root/file_name``.

    Raises:
        FileNotFoundError: no such file.
        DownloadError: an entry lacks ``path`` or ``url``, names an unknown hash type, or points
            outside the bundle folder.
    """
    import yaml

    source = Path(bundle_root) / file_name
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist; pass the bundle folder as bundle_root")
    data = yaml.safe_load(source.read_text()) or {}
    entries = data.get("large_files") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DownloadError(f"{source}: expected a 'large_files' list")
    files = []
    for i, entry in enumerate(entries):
        where = f"{source}: large_files[{i}]"
        if not isinstance(entry, dict) or not entry.get("path") or not entry.get("url"):
            raise DownloadError(f"{where}: each entry needs 'path' and 'url'")
        raw_hash = entry.get("hash_val")
        if raw_hash is not None and not isinstance(raw_hash, str):
            # YAML reads an unquoted digest such as 1234e56... as a number
            raise DownloadError(f"{where}: hash_val must be a quoted string, got {raw_hash!r}")
        hash_val = (raw_hash or "").strip().lower() or None
        hash_type = str(entry.get("hash_type") or "sha256").strip().lower()
        if hash_type not in HASH_TYPES:
            raise DownloadError(f"{where}: unknown hash_type {hash_type!r}; use one of {', '.join(HASH_TYPES)}")
        path = str(entry["path"])
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise DownloadError(f"{where}: path {path!r} must stay inside the bundle folder")
        files.append(LargeFile(path, str(entry["url"]), hash_val, hash_type))
    return files


def _digest(path: Path, hash_type: str) -> str:
    digest = hashlib.new(hash_type)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hash(path: Path, entry: LargeFile, what: str) -> None:
    if entry.hash_val is None:
        return
    actual = _digest(path, entry.hash_type)
    if actual != entry.hash_val:
        raise HashMismatchError(
            f"{what} {entry.path} from {entry.url} has {entry.hash_type} {actual}, but large_files.yml "
            f"states {entry.hash_val}; the download is damaged or the file was replaced "
            "(nothing was kept; retry, or check the URL and hash)"
        )


def _download(entry: LargeFile, target: Path, progress: bool) -> None:
    """Stream ``entry.url`` into a hidden temporary beside ``target``; rename once its hash matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".download-{os.getpid()}-{target.name}")
    try:
        try:
            response = urllib.request.urlopen(entry.url, timeout=60)
        except (OSError, ValueError) as err:
            raise DownloadError(f"cannot fetch {entry.url} for {entry.path}: {err}") from err
        with response, open(temporary, "wb") as handle:
            size = response.headers.get("Content-Length")
            with tqdm(total=int(size) if size else None, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=target.name, disable=not progress) as bar:
                for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                    handle.write(chunk)
                    bar.update(len(chunk))
        _check_hash(temporary, entry, "downloaded file")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def fetch_large_files(
    bundle_root: str | Path,
    names: list[str] | None = None,
    file_name: str = "large_files.yml",
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Fetch entries of ``large_files.yml`` into the bundle folder.

    Args:
        bundle_root: the bundle folder (holding ``large_files.yml``).
        names: fetch only these entries, by file name with or without suffix
            (``"sam2.1_hiera_tiny"``) or by path; ``None`` fetches every entry.
        file_name: the large-files list inside ``bundle_root``.
        overwrite: fetch again even if the file exists.
        progress: show a progress bar per file.

    Returns:
        The paths of the requested files (existing ones whose hash matches are not fetched again).

    Raises:
        DownloadError: an unknown name, a bad entry or an unreachable URL.
        HashMismatchError: a fetched file, or an existing one, does not have the stated hash.
    """
    bundle_root = Path(bundle_root)
    entries = read_large_files(bundle_root, file_name)
    if names is not None:
        known = {key: entry for entry in entries for key in (entry.name, Path(entry.path).name, entry.path)}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise DownloadError(
                f"{unknown} not in {bundle_root / file_name}; known: {', '.join(e.name for e in entries)}"
            )
        entries = list(dict.fromkeys(known[name] for name in names))
    paths = []
    for entry in entries:
        target = bundle_root / entry.path
        if target.is_file() and not overwrite:
            _check_hash(target, entry, "existing file")
            logger.info("%s exists; not fetched again", target)
        else:
            if entry.hash_val is None:
                logger.warning("%s: no published hash, so its integrity is not checked", entry.path)
            _download(entry, target, progress)
            logger.info("fetched %s", target)
        paths.append(target)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sam2s.bundle.download", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle_root", default="bundle", help="the bundle folder (default: bundle)")
    parser.add_argument("--name", nargs="*", default=None,
                        help="entries to fetch, e.g. sam2.1_hiera_tiny (default: every entry)")
    parser.add_argument("--overwrite", action="store_true", help="fetch again even if the file exists")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        for path in fetch_large_files(args.bundle_root, args.name, overwrite=args.overwrite):
            print(path)
    except (DownloadError, FileNotFoundError) as err:
        print(f"error: {err}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
