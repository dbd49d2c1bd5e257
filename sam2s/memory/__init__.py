"""Memory-bank policies: which remembered frames memory attention sees."""

from sam2s.config import ModelConfig
from sam2s.memory.base import FrameMemory, MemoryPolicy, ObjectMemory, RecentFrameCache, TrackedFrames
from sam2s.memory.divemem import DiveMemPolicy
from sam2s.memory.sam2_window import SAM2WindowPolicy

__all__ = [
    "DiveMemPolicy",
    "FrameMemory",
    "MemoryPolicy",
    "ObjectMemory",
    "RecentFrameCache",
    "SAM2WindowPolicy",
    "TrackedFrames",
    "build_memory_policy",
]


def build_memory_policy(config: ModelConfig) -> MemoryPolicy:
    """The memory policy a model config asks for (SAM 2's window unless DiveMem is enabled)."""
    if config.divemem.enabled:
        return DiveMemPolicy(config.tracker, config.divemem)
    return SAM2WindowPolicy(config.tracker)
