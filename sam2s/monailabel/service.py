"""The interactive segmentation service behind the MONAI Label task (no MONAI Label import).

:class:`InteractiveSegmenter` takes the request dict MONAI Label builds and returns the path of
a label image plus a JSON-able dict, as MONAI Label's infer tasks do. One request:

1. is parsed and checked (:class:`~sam2s.monailabel.protocol.InferRequest`);
2. finds its :class:`~sam2s.monailabel.sessions.ImageSession` by (client, image, how the image is
   read), opening the image on first use; a request without a client id gets a session of its
   own that is closed at the end;
3. adds its prompts, object by object and frame by frame (a drawn mask first, then clicks and
   box, which replace that object's earlier clicks on that frame);
4. answers with the prompted frames (``propagate="none"``), or propagates
   (``forward`` / ``backward`` / ``both``), all at once or ``chunk_frames`` at a time
   (``resume: true`` fetches the next chunk), so a client can show progress and stop early;
5. writes the computed frames into one label image (values = object ids).

Requests run one at a time: one model on one device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

import sam2s
from sam2s.data.sources import FrameIndexError
from sam2s.monailabel.images import OpenedImage, label_block, open_image, write_label
from sam2s.monailabel.protocol import InferRequest, RequestError
from sam2s.monailabel.sessions import ImageSession, PropagationCursor, SessionKey, SessionStore
from sam2s.predictor.video import PromptError, PropagationPass
from sam2s.writers import label_map

__all__ = ["FrameAnswer", "InteractiveSegmenter", "pass_length"]

logger = logging.getLogger(__name__)


@dataclass
class FrameAnswer:
    """What one request computed.

    Attributes:
        frames: the computed frames, in the order they were computed.
        labels: ``{frame: (H, W) label image}`` (object id per pixel, later objects win overlaps).
        class_scores: ``{frame: {obj_id: {category: probability}}}`` when the model predicts categories.
        done, total: propagation progress in frames (a prompt-only answer: its frames, twice).
        finished: ``False`` while a chunked propagation has frames left (``resume`` to continue).
    """

    frames: list[int] = field(default_factory=list)
    labels: dict[int, np.ndarray] = field(default_factory=dict)
    class_scores: dict[int, dict] = field(default_factory=dict)
    done: int = 0
    total: int = 0
    finished: bool = True

    def add(self, result: sam2s.FrameResult) -> None:
        ids = list(result.obj_ids)
        dtype = np.uint8 if max(ids, default=0) <= 255 else np.uint16
        masks = result.masks.cpu().numpy()
        self.frames.append(int(result.frame_index))
        self.labels[int(result.frame_index)] = label_map(ids, masks, dtype)
        if result.class_scores:
            self.class_scores[int(result.frame_index)] = {
                int(obj): {name: float(p) for name, p in scores.items()}
                for obj, scores in result.class_scores.items()
            }


def pass_length(planned: PropagationPass, num_frames: int, limit: int | None) -> int:
    """Frames one propagation pass yields on a source of ``num_frames`` frames."""
    length = planned.first + 1 if planned.reverse else num_frames - planned.first
    length = max(0, length)
    return length if limit is None else min(length, limit)


class InteractiveSegmenter:
    """Serves interactive requests with one predictor and a store of per-client sessions.

    Args:
        predictor: the model's :class:`sam2s.VideoPredictor`.
        store: the per-client sessions.
        label_ids: label names and their values, for objects given by ``label`` name.
        default_propagate: ``propagate`` when a request does not say.
        result_folder: where label files are written (default: the system's temporary folder).
        max_frames_per_request: a propagation answers after at most this many frames even when
            the request asks for all (``finished: false``, ``resume`` continues): one answer holds
            its frames' labels in memory, and a long video's would not fit.
    """

    def __init__(
        self,
        predictor: sam2s.VideoPredictor,
        store: SessionStore,
        label_ids: Mapping[str, int] | None = None,
        default_propagate: str = "none",
        result_folder: str | None = None,
        max_frames_per_request: int = 1000,
    ) -> None:
        if max_frames_per_request < 1:
            raise ValueError(f"max_frames_per_request must be at least 1, got {max_frames_per_request}")
        self.predictor = predictor
        self.store = store
        self.label_ids = dict(label_ids or {})
        self.default_propagate = default_propagate
        self.result_folder = result_folder
        self.max_frames_per_request = max_frames_per_request

    def __call__(
        self, request: Mapping[str, object], default_propagate: str | None = None
    ) -> tuple[str, dict]:
        """Serve one request; returns ``(label file path, result JSON)``.

        Raises:
            RequestError: the request is malformed or cannot be served; ``status`` says which 4xx.
        """
        started = time.perf_counter()
        parsed = InferRequest.from_params(
            request, self.label_ids, default_propagate or self.default_propagate
        )
        path = request.get("image")
        if not path or not isinstance(path, str):
            raise RequestError("no image: give a datastore image id (?image=ID) or upload one", status=404)
        key = self._session_key(request, parsed)
        with self.store.lock:
            if key is None:
                if parsed.resume:
                    raise RequestError(
                        "resume needs a 'client_id': requests without one keep no state", status=409
                    )
                state = self._open(path, parsed)
                try:
                    answer = self._serve(state, parsed)
                finally:
                    state.close()
            else:
                if parsed.resume and key not in self.store:
                    raise RequestError(
                        "nothing to resume: this client has no session on this image (it may have expired); "
                        "start again with 'propagate'",
                        status=409,
                    )
                state = self.store.get_or_open(key, lambda: self._open(path, parsed))
                answer = self._serve(state, parsed)
            opened: OpenedImage = state.info  # type: ignore[assignment]
            names = dict(state.object_names)
        result_file, block_first = self._write(answer, opened, parsed)
        result = {
            "frames": answer.frames,
            "first_frame": block_first,
            "axis": opened.geometry.axis,
            "frame_index_axis": opened.layout.frame_index_axis,
            "kind": opened.kind,
            "label_names": {(name or f"object_{obj_id}"): obj_id for obj_id, name in names.items()},
            "progress": {"done": answer.done, "total": answer.total},
            "finished": answer.finished,
            "session": "kept" if key is not None else "one-shot",
            "latencies": {"total": round(time.perf_counter() - started, 3)},
        }
        if answer.class_scores:
            result["class_scores"] = {
                str(f): {str(o): s for o, s in v.items()} for f, v in answer.class_scores.items()
            }
        return result_file, result

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _session_key(request: Mapping[str, object], parsed: InferRequest) -> SessionKey | None:
        """(client, image) for a request that can keep state, else ``None``."""
        uploaded = request.get("session")  # MONAI Label's own session: an image uploaded for one client
        upload_id = (
            (uploaded.get("name") or uploaded.get("session_id")) if isinstance(uploaded, Mapping) else None
        )
        image = request.get("image_id") or upload_id
        client = parsed.client_id or (f"upload:{upload_id}" if upload_id else None)
        if not client or not image:
            return None
        return SessionKey(str(client), str(image), parsed.reading)

    def _open(self, path: str, parsed: InferRequest) -> ImageSession:
        opened = open_image(path, parsed)
        return ImageSession(session=sam2s.Session(self.predictor, opened.source), info=opened)

    def _serve(self, state: ImageSession, parsed: InferRequest) -> FrameAnswer:
        session = state.session
        if parsed.resume:  # (never with reset or prompts: the parser refuses those)
            if state.cursor is None or state.cursor.finished:
                raise RequestError(
                    "nothing to resume: no propagation is in progress; start one with 'propagate'", 409
                )
            return self._propagate(state, self._chunk(parsed), one_pass=True)

        layout = state.info.layout  # type: ignore[attr-defined]
        # Check every prompt before changing anything, so a bad request leaves the session as it was.
        planned = [(obj, layout.frame_prompts(obj, parsed.frame)) for obj in parsed.objects]
        if parsed.reset:
            # Not session.reset(): that would also drop the image features of the frame in hand.
            for obj_id in session.obj_ids:
                session.remove_object(obj_id)
            state.object_names.clear()
            state.cursor = None
        prompted: dict[int, sam2s.FrameResult] = {}
        try:
            for obj, frame_prompts in planned:
                state.object_names[obj.obj_id] = obj.label or state.object_names.get(obj.obj_id)
                for frame, prompt in frame_prompts.items():
                    if prompt.mask is not None:
                        prompted[frame] = session.add_prompt(frame, obj.obj_id, mask=prompt.mask)
                    if prompt.has_clicks_or_box:
                        prompted[frame] = session.add_prompt(
                            frame,
                            obj.obj_id,
                            points=prompt.points or None,
                            labels=prompt.labels or None,
                            box=prompt.box,
                        )
        except (PromptError, FrameIndexError, IndexError) as error:
            raise RequestError(f"bad prompt: {error}") from None
        if planned:
            state.cursor = None  # new prompts: an earlier chunked propagation is out of date

        if parsed.propagate == "none":
            if not prompted:
                raise RequestError(
                    "no prompts: give 'foreground'/'background' points, a 'roi' or 'masks', or set 'propagate'"
                )
            answer = FrameAnswer(done=len(prompted), total=len(prompted))
            for frame in sorted(prompted):
                answer.add(prompted[frame])
            return answer
        if not session.obj_ids:
            raise RequestError(
                "nothing to propagate: there are no objects yet for this client and image; send prompts"
            )
        try:
            passes = session.plan(parsed.propagate, parsed.start_frame)
        except IndexError as error:
            raise RequestError(f"bad start_frame: {error}") from None
        num_frames = int(session.num_frames)
        total = sum(pass_length(p, num_frames, parsed.max_frames) for p in passes)
        state.cursor = PropagationCursor(passes=passes, pass_limit=parsed.max_frames, total=total)
        return self._propagate(state, self._chunk(parsed), one_pass=parsed.chunk_frames is not None)

    def _chunk(self, parsed: InferRequest) -> int:
        return min(parsed.chunk_frames or self.max_frames_per_request, self.max_frames_per_request)

    @staticmethod
    def _propagate(state: ImageSession, chunk_frames: int, one_pass: bool) -> FrameAnswer:
        """Run the cursor's passes for at most ``chunk_frames`` frames.

        With ``one_pass`` (chunks the client asked for, and every resumed answer) an answer stops
        at the end of a pass, so its frames are contiguous and its label block holds no frame of
        an earlier answer. A fresh answer may run on into the next pass: the backward pass of
        ``both`` starts next to the forward pass's first frame, so its frames stay contiguous.
        """
        session, cursor = state.session, state.cursor
        assert cursor is not None
        num_frames = int(session.num_frames)

        def skip_empty_passes() -> None:  # e.g. the backward half of "both" prompted on frame 0
            while not cursor.finished and not 0 <= cursor.passes[cursor.pass_index].first < num_frames:
                cursor.pass_index += 1

        answer = FrameAnswer(total=cursor.total)
        skip_empty_passes()
        while not cursor.finished and len(answer.frames) < chunk_frames:
            planned = cursor.passes[cursor.pass_index]
            budget = chunk_frames - len(answer.frames)
            if cursor.pass_limit is not None:
                budget = min(budget, cursor.pass_limit - cursor.pass_done)
            step = -1 if planned.reverse else 1
            for output in session.run_pass(planned, max_frames=budget, resume_at=cursor.next_frame):
                answer.add(output)
                cursor.done += 1
                cursor.pass_done += 1
                cursor.next_frame = output.frame_index + step
            following = planned.first if cursor.next_frame is None else cursor.next_frame
            limit_reached = cursor.pass_limit is not None and cursor.pass_done >= cursor.pass_limit
            if 0 <= following < num_frames and not limit_reached:
                break  # the chunk is full, the pass goes on
            cursor.pass_index += 1
            cursor.next_frame, cursor.pass_done = None, 0
            skip_empty_passes()
            if one_pass:
                break
        answer.done, answer.finished = cursor.done, cursor.finished
        if cursor.finished:
            state.cursor = None
        return answer

    def _write(self, answer: FrameAnswer, opened: OpenedImage, parsed: InferRequest) -> tuple[str, int]:
        whole = parsed.label_frames == "all" or (
            parsed.label_frames is None and opened.kind in ("volume", "image")
        )
        labels, geometry, first = label_block(answer.labels, opened.geometry, whole)
        extension = parsed.result_extension or (".png" if opened.kind == "image" else ".nii.gz")
        return write_label(labels, geometry, extension, self.result_folder), first
