"""The SAM2S Segment Editor effect (registered by the SAM2S module at startup)."""
