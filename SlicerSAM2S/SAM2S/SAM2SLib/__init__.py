"""Parts of the SAM2S Slicer module that need no Qt (they run headless on slicer-core)."""
