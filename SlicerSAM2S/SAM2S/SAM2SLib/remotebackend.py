"""The remote backend: the model runs on a MONAI Label server (the ``sam2s`` task of
``sam2s/monailabel/app``), the effect stays the same.

Needs only ``numpy`` and ``requests`` (both ship with Slicer): no torch, no ``sam2s``.

How it talks to the server:

1. the frames go up once per :class:`~SAM2SLib.backend.FrameStack` as a MONAI Label session
   (``PUT /session/``, an NRRD of ``(T, H, W)`` grey values or ``(T, H, W)`` RGB pixels, read by the
   server as a frame stack, exactly as the local backend reads it);
2. ``POST /infer/<model>?session_id=...`` sends this client's prompts (clicks, boxes, drawn
   masks) with ``reset`` and ``propagate``, and gets back ``chunkFrames`` frames as a label NRRD
   plus a JSON part (frames, progress); ``resume`` asks for the next chunk.

Progress is reported frame by frame as chunks arrive; cancelling (closing the iterator) stops
between two chunks, so a chunk's size bounds how long a cancel takes.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import gzip
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Sequence

import numpy as np
from SAM2SLib.backend import FrameStack, InferenceBackend, ProgressCallback, checkDirection
from SAM2SLib.prompts import FramePrediction, SegmentPrompts

__all__ = ["RemoteBackend", "ServerError", "encodeMask", "readNrrd", "writeNrrd"]

DEFAULT_MODEL = "sam2s"


class ServerError(RuntimeError):
    """The server answered with an error (its message is kept), or could not be reached."""


class RemoteBackend(InferenceBackend):
    """Runs the model on a MONAI Label server with the SAM2S app.

    Args:
        serverUrl: the server's address, e.g. ``"http://gpu-server:8000"``.
        model: the infer task to call (``"sam2s"``).
        clientId: this annotator's id on the server (default: a new random one), which keeps
            its prompts apart from every other client's. Previews and propagations use two
            sessions under it (``<clientId>/preview``, ``<clientId>/propagate``), so a click
            during a propagation does not disturb it, as with the local backend.
        chunkFrames: frames per request while propagating (progress and cancel granularity).
        timeout: seconds to wait for one answer.
        sessionExpiry: seconds the server keeps the uploaded frames after their last use.
    """

    def __init__(
        self,
        serverUrl: str,
        model: str = DEFAULT_MODEL,
        clientId: str | None = None,
        chunkFrames: int = 8,
        timeout: float = 600.0,
        sessionExpiry: int = 3600,
    ) -> None:
        import requests

        if not serverUrl.startswith(("http://", "https://")):
            raise ValueError(f"the server address must start with http:// or https://, got {serverUrl!r}")
        if chunkFrames < 1:
            raise ValueError(f"chunkFrames must be at least 1, got {chunkFrames}")
        self.serverUrl = serverUrl.rstrip("/")
        self.model = model
        self.clientId = clientId or f"slicer-{uuid.uuid4().hex}"
        self.chunkFrames = chunkFrames
        self.timeout = timeout
        self.sessionExpiry = sessionExpiry
        self._http = requests.Session()
        self._lock = threading.Lock()
        self._uploaded: tuple[FrameStack, str] | None = None  # the stack is kept, so its id is never reused

    @property
    def hasCategories(self) -> bool:
        """Whether the server's model predicts instrument categories."""
        info = self._get("/info/")
        return bool(info.get("models", {}).get(self.model, {}).get("sam2s", {}).get("categories", False))

    # ------------------------------------------------------------------ InferenceBackend
    def propagate(
        self,
        frames: FrameStack,
        prompts: Sequence[SegmentPrompts],
        direction: str = "both",
        progress: ProgressCallback | None = None,
    ) -> Iterator[FramePrediction]:
        checkDirection(direction)
        sessionId = self._upload(frames)
        objectIds = {objectId: p.segmentId for objectId, p in enumerate(prompts, start=1)}
        params = {
            **self._readingParams(frames, "propagate"),
            "reset": True,
            "objects": [_objectParams(objectId, p, p.frames) for objectId, p in zip(objectIds, prompts)],
            "propagate": direction,
            "chunk_frames": self.chunkFrames,
        }
        done = 0
        while True:
            result, labels = self._infer(sessionId, params)
            for prediction in _predictions(result, labels, objectIds):
                done += 1
                if progress is not None:
                    progress(done, int(result["progress"]["total"]))
                yield prediction
            if result["finished"]:
                return
            params = {
                **self._readingParams(frames, "propagate"),
                "resume": True,
                "chunk_frames": self.chunkFrames,
            }

    def predictFrame(
        self, frames: FrameStack, frameIndex: int, prompts: Sequence[SegmentPrompts]
    ) -> FramePrediction:
        sessionId = self._upload(frames)
        framePrompts = [p for p in prompts if frameIndex in p.frames and not p.frames[frameIndex].isEmpty]
        if not framePrompts:
            raise ValueError(f"no prompt on frame {frameIndex}: click, drag a box or draw there first")
        objectIds = {objectId: p.segmentId for objectId, p in enumerate(framePrompts, start=1)}
        params = {
            **self._readingParams(frames, "preview"),
            "reset": True,
            "objects": [
                _objectParams(objectId, p, {frameIndex: p.frames[frameIndex]})
                for objectId, p in zip(objectIds, framePrompts)
            ],
            "propagate": "none",
        }
        result, labels = self._infer(sessionId, params)
        return next(p for p in _predictions(result, labels, objectIds) if p.frameIndex == frameIndex)

    def close(self) -> None:
        with self._lock:
            uploaded, self._uploaded = self._uploaded, None
        if uploaded is not None:
            try:
                self._http.delete(f"{self.serverUrl}/session/{uploaded[1]}", timeout=self.timeout)
            except Exception as error:  # noqa: BLE001 - the server forgets it on expiry anyway
                logging.getLogger(__name__).info("could not delete the frames on the server: %s", error)
        self._http.close()

    # ------------------------------------------------------------------ requests
    def _readingParams(self, frames: FrameStack, purpose: str) -> dict:
        window = frames.window
        if isinstance(window, (tuple, list)):
            window = [float(window[0]), float(window[1])]
        elif window is not None and not isinstance(window, str):
            raise ValueError(f"a remote server takes a window preset name or (lower, upper), got {window!r}")
        return {
            "client_id": f"{self.clientId}/{purpose}",
            "frame_stack": True,
            "window": window,
            "label_frames": "computed",
            "result_extension": ".nrrd",
        }

    def _upload(self, frames: FrameStack) -> str:
        with self._lock:
            if self._uploaded is not None and self._uploaded[0] is frames:
                return self._uploaded[1]
        stack = (
            frames.frames
            if isinstance(frames.frames, np.ndarray)
            else np.stack([np.asarray(f) for f in frames.frames])
        )
        response = self._request(
            "put",
            "/session/",
            params={"expiry": int(self.sessionExpiry)},
            files=[("files", ("frames.nrrd", writeNrrd(stack), "application/octet-stream"))],
        )
        sessionId = response.json()["session_id"]
        with self._lock:
            self._uploaded = (frames, sessionId)
        return sessionId

    def _infer(self, sessionId: str, params: dict) -> tuple[dict, np.ndarray]:
        response = self._request(
            "post",
            f"/infer/{self.model}",
            params={"session_id": sessionId},
            data={"params": json.dumps(params)},
        )
        parts = _multipart(response.headers.get("content-type", ""), response.content)
        if "params" not in parts or "image" not in parts:
            raise ServerError(
                f"the server's answer lacks the label or its description (parts: {sorted(parts)})"
            )
        return json.loads(parts["params"]), readNrrd(parts["image"])

    def _get(self, path: str) -> dict:
        return self._request("get", path).json()

    def _request(self, method: str, path: str, **options):
        import requests

        try:
            response = self._http.request(method, self.serverUrl + path, timeout=self.timeout, **options)
        except requests.RequestException as error:
            raise ServerError(f"cannot reach the SAM2S server at {self.serverUrl}: {error}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ServerError(f"the SAM2S server answered {response.status_code}: {detail}")
        return response


def _objectParams(objectId: int, segmentPrompts: SegmentPrompts, frames: dict) -> dict:
    """One segment's prompts in the server's format: points are ``[x, y, frame]``."""
    foreground, background, masks, roi = [], [], [], None
    for frameIndex in sorted(frames):
        prompt = frames[frameIndex]
        if prompt.isEmpty:
            continue
        for click in prompt.clicks:
            (foreground if click.positive else background).append(
                [float(click.x), float(click.y), int(frameIndex)]
            )
        if prompt.box is not None:
            if roi is not None:
                raise ValueError(
                    f"segment {segmentPrompts.segmentId!r}: a remote server takes one box per segment"
                )
            x0, y0, x1, y1 = (float(v) for v in prompt.box)
            roi = [x0, y0, x1, y1, int(frameIndex), int(frameIndex)]
        if prompt.mask is not None:
            masks.append({"frame": int(frameIndex), **encodeMask(prompt.mask)})
    item = {"id": objectId, "foreground": foreground, "background": background, "masks": masks}
    if roi is not None:
        item["roi"] = roi
    return item


def _predictions(result: dict, labels: np.ndarray, objectIds: dict[int, str]) -> Iterator[FramePrediction]:
    """The frames of one answer, in the order the server computed them."""
    first = int(result["first_frame"])
    scores = result.get("class_scores") or {}
    for frameIndex in result["frames"]:
        frameLabels = labels[int(frameIndex) - first]
        masks = {segmentId: frameLabels == objectId for objectId, segmentId in objectIds.items()}
        frameScores = scores.get(str(frameIndex))
        classScores = None
        if frameScores is not None:
            classScores = {objectIds[int(o)]: s for o, s in frameScores.items() if int(o) in objectIds}
        yield FramePrediction(int(frameIndex), masks, classScores)


def _multipart(contentType: str, body: bytes) -> dict[str, bytes]:
    """The parts of a ``multipart/form-data`` answer, by field name."""
    if not contentType.startswith("multipart/"):
        raise ServerError(
            f"expected a label and its description from the server, got {contentType or 'no content type'}"
        )
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + contentType.encode("latin-1") + b"\r\n\r\n" + body
    )
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            parts[name] = part.get_payload(decode=True)
    return parts


# ---------------------------------------------------------------------------------- encodings
def encodeMask(mask: np.ndarray) -> dict:
    """``(H, W)`` bool -> ``{"shape": [H, W], "bits": base64(numpy.packbits(mask, C order))}``."""
    mask = np.asarray(mask, dtype=bool)
    return {"shape": list(mask.shape), "bits": base64.b64encode(np.packbits(mask.ravel())).decode("ascii")}


_NRRD_TYPES = {
    "int8": np.int8, "signed char": np.int8, "uint8": np.uint8, "unsigned char": np.uint8, "uchar": np.uint8,
    "int16": np.int16, "short": np.int16, "uint16": np.uint16, "unsigned short": np.uint16, "ushort": np.uint16,
    "int32": np.int32, "int": np.int32, "uint32": np.uint32, "unsigned int": np.uint32, "uint": np.uint32,
    "int64": np.int64, "uint64": np.uint64, "float": np.float32, "double": np.float64,
}  # fmt: skip
_NRRD_NAMES = {np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8", np.dtype(np.int16): "int16",
               np.dtype(np.uint16): "uint16", np.dtype(np.int32): "int32", np.dtype(np.uint32): "uint32",
               np.dtype(np.int64): "int64", np.dtype(np.uint64): "uint64", np.dtype(np.float32): "float",
               np.dtype(np.float64): "double"}  # fmt: skip


def writeNrrd(frames: np.ndarray) -> bytes:
    """A gzip NRRD of ``(T, H, W)`` grey frames or ``(T, H, W, 3)`` uint8 RGB frames (unit spacing)."""
    frames = np.ascontiguousarray(frames)
    if frames.dtype == np.bool_:
        frames = frames.astype(np.uint8)
    if frames.dtype not in _NRRD_NAMES:
        raise ValueError(f"cannot send frames of dtype {frames.dtype}")
    if frames.ndim == 4 and frames.shape[3] == 3:
        sizes, kinds = (
            [3, frames.shape[2], frames.shape[1], frames.shape[0]],
            "RGB-color domain domain domain",
        )
    elif frames.ndim == 3:
        sizes, kinds = [frames.shape[2], frames.shape[1], frames.shape[0]], "domain domain domain"
    else:
        raise ValueError(f"frames must be (T, H, W) grey or (T, H, W, 3) RGB, got {frames.shape}")
    header = (
        "NRRD0004\n"
        f"type: {_NRRD_NAMES[frames.dtype]}\n"
        f"dimension: {len(sizes)}\n"
        f"sizes: {' '.join(str(s) for s in sizes)}\n"
        f"kinds: {kinds}\n"
        "endian: little\n"
        "encoding: gzip\n\n"
    )
    data = frames.astype(frames.dtype.newbyteorder("<"), copy=False).tobytes()
    return header.encode("ascii") + gzip.compress(data, compresslevel=1)


def readNrrd(content: bytes) -> np.ndarray:
    """A single-file NRRD (raw or gzip, one component) -> numpy array, slowest axis first."""
    end = content.find(b"\n\n")
    if not content.startswith(b"NRRD") or end < 0:
        raise ServerError("the server's label is not an NRRD file")
    fields = {}
    for line in content[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip()] = value.lstrip("=").strip()
    dtype = np.dtype(_NRRD_TYPES[fields["type"]])
    if fields.get("endian", "little") == "big":
        dtype = dtype.newbyteorder(">")
    sizes = [int(s) for s in fields["sizes"].split()]
    data = content[end + 2 :]
    encoding = fields.get("encoding", "raw")
    if encoding in ("gzip", "gz"):
        data = gzip.decompress(data)
    elif encoding != "raw":
        raise ServerError(f"cannot read NRRD encoding {encoding!r}")
    return np.frombuffer(data, dtype=dtype).reshape(sizes[::-1]).astype(dtype.newbyteorder("="))
