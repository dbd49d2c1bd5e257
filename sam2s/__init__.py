"""SAM2S."""
