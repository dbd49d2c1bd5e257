"""Parts of the SAM2S Slicer module that need no Qt (they run headless on slicer-core)."""
# ruff: noqa: N999  (Slicer names a module's helper package <Module>Lib)
