"""SAM2S: Segment Anything 2 for surgical videos and medical volumes.

Public entry points::

    import sam2s
    model = sam2s.build_model("sam2.1_hiera_t", checkpoint=None, device="cpu")
    image_predictor = sam2s.ImagePredictor(model)
    video_predictor = sam2s.VideoPredictor(model)
"""

from sam2s.checkpoint import build_model
from sam2s.config import ModelConfig, available_configs, load_config
from sam2s.predictor.image import ImagePredictor
from sam2s.predictor.results import FrameResult
from sam2s.predictor.video import Session, VideoPredictor

__version__ = "0.1.0"

__all__ = [
    "FrameResult",
    "ImagePredictor",
    "ModelConfig",
    "Session",
    "VideoPredictor",
    "__version__",
    "available_configs",
    "build_model",
    "load_config",
]
