"""The ``sam2s`` MONAI Label infer tasks, and the server settings they are built from.

Two task names share one predictor and one store of per-client sessions:

* ``sam2s``: answers with the prompted frames only, unless a request sets ``propagate``;
* ``sam2s_propagate``: propagates in both directions unless a request says otherwise.

A bad request raises :class:`fastapi.HTTPException` with a 4xx status and a message that names
the problem (MONAI Label passes it through to the client); see ``app/README.md`` for the request
reference.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from sam2s.data.vocabulary import VOCABULARY
from sam2s.monailabel.model import ModelSettings, load_predictor
from sam2s.monailabel.protocol import DIRECTIONS, LABEL_FRAMES, RequestError
from sam2s.monailabel.service import InteractiveSegmenter
from sam2s.monailabel.sessions import SessionStore

__all__ = [
    "TASKS",
    "AppSettings",
    "SAM2SInferTask",
    "build_segmenter",
    "check_infer_request",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)

TASKS = {"sam2s": "none", "sam2s_propagate": "both"}
"""Task name -> its default ``propagate``."""


@dataclass(frozen=True)
class AppSettings:
    """The app's ``--conf key value`` settings (all optional).

    Attributes:
        model: model name, checkpoint, device, bundle folder and frame cache (conf keys
            ``model``, ``checkpoint``, ``device``, ``bundle``, ``cache_frames``).
        session_expiry_s: close a client's session after this many idle seconds (``session_expiry``).
        max_sessions: sessions kept at most, least recently used closed first (``max_sessions``).
        labels: label names, valued 1, 2, ... in this order (``labels``, comma-separated);
            default: the SAM2S vocabulary of 21 instruments and 16 tissues.
        max_frames_per_request: frames one propagation answer holds at most
            (``max_frames_per_request``); the client resumes for more.
    """

    model: ModelSettings = field(default_factory=ModelSettings)
    session_expiry_s: float = 3600.0
    max_sessions: int = 16
    labels: tuple[str, ...] = VOCABULARY
    max_frames_per_request: int = 1000

    @property
    def label_ids(self) -> dict[str, int]:
        return {name: value for value, name in enumerate(self.labels, start=1)}

    @classmethod
    def from_conf(cls, conf: Mapping[str, str] | None) -> AppSettings:
        """Read the settings from MONAI Label's ``conf`` dict; other keys are left to MONAI Label.

        Raises:
            ValueError: a value cannot be used, naming the key.
        """
        conf = dict(conf or {})

        def number(key: str, kind: type, default, minimum):
            raw = conf.get(key)
            if raw in (None, ""):
                return default
            try:
                value = kind(raw)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"--conf {key} must be {what}, got {raw!r}") from None
            if value < minimum:
                raise ValueError(f"--conf {key} must be at least {minimum}, got {value}")
            return value

        labels = (
            tuple(name.strip() for name in conf.get("labels", "").split(",") if name.strip()) or VOCABULARY
        )
        if len(set(labels)) != len(labels):
            raise ValueError(f"--conf labels has repeated names: {labels}")
        model = ModelSettings(
            model=conf.get("model") or None,
            checkpoint=conf.get("checkpoint") or None,
            device=conf.get("device") or "auto",
            bundle=conf.get("bundle") or None,
            cache_frames=number("cache_frames", int, None, 1),
        )
        return cls(
            model=model,
            session_expiry_s=number("session_expiry", float, 3600.0, 1.0),
            max_sessions=number("max_sessions", int, 16, 1),
            labels=labels,
            max_frames_per_request=number("max_frames_per_request", int, 1000, 1),
        )


def build_segmenter(settings: AppSettings) -> InteractiveSegmenter:
    """Load the model (through the bundle config) and the session store."""
    predictor = load_predictor(settings.model)
    store = SessionStore(expiry_s=settings.session_expiry_s, max_sessions=settings.max_sessions)
    return InteractiveSegmenter(
        predictor, store, settings.label_ids, max_frames_per_request=settings.max_frames_per_request
    )


class SAM2SInferTask(InferTask):
    """A MONAI Label infer task over an :class:`InteractiveSegmenter`.

    Args:
        segmenter: the shared model and sessions.
        propagate: this task's default ``propagate`` (``"none"``, ``"forward"``, ``"backward"``, ``"both"``).
        labels: label names and values, shown to clients.
    """

    def __init__(
        self,
        segmenter: InteractiveSegmenter,
        propagate: str = "none",
        labels: Mapping[str, int] | None = None,
    ):
        if propagate not in DIRECTIONS:
            raise ValueError(f"propagate must be one of {DIRECTIONS}, got {propagate!r}")
        what = "the prompted slices / frames" if propagate == "none" else f"propagation ({propagate})"
        super().__init__(
            type=InferType.ANNOTATION,
            labels=dict(labels if labels is not None else segmenter.label_ids),
            dimension=3,
            description=f"SAM2S interactive segmentation: {what}; several objects, per-client sessions",
            config={
                "propagate": [propagate, *[d for d in DIRECTIONS if d != propagate]],
                "label_frames": list(LABEL_FRAMES),
                "reset": False,
            },
        )
        self.segmenter = segmenter
        self.propagate = propagate

    def is_valid(self) -> bool:
        return True

    def info(self) -> dict[str, Any]:
        info = super().info()
        predictor = self.segmenter.predictor
        info["sam2s"] = {
            "model": predictor.model.config.name,
            "device": str(predictor.device),
            "image_size": int(predictor.model.image_size),
            "propagate": self.propagate,
            "session_expiry_s": self.segmenter.store.expiry_s,
            "categories": bool(getattr(predictor.model, "has_class_bank", False)),
        }
        return info

    def __call__(self, request: dict) -> tuple[str, dict]:
        try:
            return self.segmenter(request, default_propagate=self.propagate)
        except RequestError as error:
            raise HTTPException(status_code=error.status, detail=str(error)) from None


def check_infer_request(request: Mapping[str, Any], tasks: Mapping[str, InferTask], datastore) -> str | None:
    """Answer an unknown model or image with a 404 before MONAI Label turns it into a 500.

    Returns:
        The datastore image id when the request names one (``None`` for an uploaded file).
    """
    model = request.get("model")
    if model not in tasks:
        raise HTTPException(
            status_code=404, detail=f"unknown model {model!r}; this server has: {', '.join(sorted(tasks))}"
        )
    image = request.get("image")
    if not image or not isinstance(image, str):
        raise HTTPException(
            status_code=404, detail="no image: pass ?image=ID of a datastore image, or upload one"
        )
    if os.path.exists(image):
        return None
    if not datastore.get_image_uri(image):
        raise HTTPException(
            status_code=404,
            detail=f"unknown image {image!r}: it is not in the datastore; upload it first (PUT /datastore/image?image=ID)",
        )
    return image


def install_error_handlers(app=None) -> None:
    """Answer ``params`` that are not JSON with a 400 instead of MONAI Label's 500.

    MONAI Label parses ``params`` in its endpoint, before any task runs, and has no handler for
    the error. The handler is added to its FastAPI app when this app is created, which happens
    after FastAPI built its middleware stack, so the stack is dropped and rebuilt on the next
    request (Starlette builds it lazily).
    """
    from fastapi.responses import JSONResponse

    if app is None:
        from monailabel.app import app

    async def not_json(_request, error: json.JSONDecodeError):
        return JSONResponse(
            status_code=400,
            content={
                "detail": f"params is not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
            },
        )

    app.add_exception_handler(json.JSONDecodeError, not_json)
    app.middleware_stack = None
