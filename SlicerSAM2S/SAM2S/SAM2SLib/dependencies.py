"""Make sure ``torch`` and ``sam2s`` are importable in Slicer's Python, installing them on consent.

PyTorch comes through Slicer's *PyTorch* extension (``PyTorchUtils``), which picks the wheel
that matches the installed NVIDIA driver; ``sam2s`` is then installed with ``pip`` from
:data:`SAM2S_REQUIREMENT` (a package name, a wheel file or a source folder; the Slicer setting
``SAM2S/PipRequirement`` overrides it). Nothing is installed without ``confirm`` returning ``True``.

Outside the Slicer application (tests, slicer-core) nothing is installed: a missing package
is a clear error.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

__all__ = ["SAM2S_REQUIREMENT", "DependencyError", "ensureDependencies", "missingPackages"]

SAM2S_REQUIREMENT = "sam2s"


class DependencyError(RuntimeError):
    """A package the model needs is missing and was not (or could not be) installed."""


def missingPackages() -> list[str]:
    """The import names among ``torch`` and ``sam2s`` that this Python cannot find."""
    return [name for name in ("torch", "sam2s") if importlib.util.find_spec(name) is None]


def _inSlicerApplication() -> bool:
    try:
        import slicer

        return hasattr(slicer, "app")
    except ImportError:
        return False


def _installTorch(confirm: Callable[[str], bool]) -> None:
    try:
        import PyTorchUtils
    except ImportError as error:
        raise DependencyError(
            "PyTorch is not installed. Install the 'PyTorch' extension from the Extensions Manager, "
            "restart Slicer, then try again."
        ) from error
    if not confirm("SAM2S needs PyTorch. Download and install it now (about 1-3 GB, a few minutes)?"):
        raise DependencyError("PyTorch was not installed; SAM2S cannot run without it")
    if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False) is None:
        raise DependencyError("the PyTorch extension could not install PyTorch; see the Python console")


def ensureDependencies(confirm: Callable[[str], bool] | None = None, requirement: str | None = None) -> None:
    """Install what is missing, after asking.

    Args:
        confirm: shows a question and returns the user's answer; without it nothing is installed.
        requirement: what ``pip`` installs for ``sam2s`` (default: the ``SAM2S/PipRequirement``
            setting, else :data:`SAM2S_REQUIREMENT`).

    Raises:
        DependencyError: something is missing and was not installed.
    """
    missing = missingPackages()
    if not missing:
        return
    if not _inSlicerApplication() or confirm is None:
        raise DependencyError(
            f"missing Python packages: {', '.join(missing)}; install them into this Python "
            "(in Slicer, open the SAM2S module and accept the installation)"
        )
    if "torch" in missing:
        _installTorch(confirm)
    if "sam2s" in missing:
        import slicer

        requirement = requirement or slicer.util.settingsValue("SAM2S/PipRequirement", SAM2S_REQUIREMENT)
        if not confirm(f"SAM2S needs its Python package. Install it now with pip ({requirement})?"):
            raise DependencyError("the sam2s package was not installed; SAM2S cannot run without it")
        slicer.util.pip_install(requirement)
    importlib.invalidate_caches()
    still = missingPackages()
    if still:
        raise DependencyError(
            f"installation finished but {', '.join(still)} still cannot be imported; restart Slicer"
        )
