"""SAM2S as a MONAI Label infer task, so annotators in Slicer, OHIF or CVAT share one server.

Unlike MONAI Label's own SAM 2 task, this one propagates forward, backward or both, tracks several
objects at once, and keeps one session per client and image (with expiry), so two annotators
never see each other's prompts.

* :mod:`~sam2s.monailabel.protocol`: the request format (MONAI Label's ``foreground`` /
  ``background`` / ``roi`` conventions, several objects, masks) and its checks;
* :mod:`~sam2s.monailabel.sessions`: per-client sessions with expiry;
* :mod:`~sam2s.monailabel.service`: serves one request with the predictor (no MONAI Label import);
* :mod:`~sam2s.monailabel.images`: opens datastore images, writes the returned label;
* :mod:`~sam2s.monailabel.model`: builds the predictor through the MONAI bundle's inference config;
* :mod:`~sam2s.monailabel.infer`: the MONAI Label infer tasks (imports ``monailabel``);
* ``app/main.py``: the MONAI Label app (``monailabel start_server --app sam2s/monailabel/app ...``).

Only :mod:`~sam2s.monailabel.infer` and the app import MONAI Label; the rest of ``sam2s`` never
imports this package.
"""

from sam2s.monailabel.model import ModelSettings, load_predictor
from sam2s.monailabel.protocol import IndexLayout, InferRequest, RequestError, decode_mask, encode_mask
from sam2s.monailabel.service import InteractiveSegmenter
from sam2s.monailabel.sessions import SessionKey, SessionStore

__all__ = [
    "IndexLayout",
    "InferRequest",
    "InteractiveSegmenter",
    "ModelSettings",
    "RequestError",
    "SessionKey",
    "SessionStore",
    "decode_mask",
    "encode_mask",
    "load_predictor",
]
