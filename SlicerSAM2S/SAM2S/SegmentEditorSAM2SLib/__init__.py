"""The SAM2S Segment Editor effect (registered by the SAM2S module at startup)."""
# ruff: noqa: N999  (Slicer names a module's helper package <Module>Lib)
