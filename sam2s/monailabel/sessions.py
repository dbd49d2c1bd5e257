"""Per-annotator interactive state for the MONAI Label task, with expiry.

A MONAI Label server is shared: several annotators click on several images at once. Each
``(client, image, how the image is read)`` gets its own :class:`ImageSession`, which holds one
:class:`sam2s.Session` (the annotator's objects, prompts and memories) and, while a propagation
is being fetched in chunks, a :class:`PropagationCursor`. Nothing is shared between keys, so one
annotator never sees another one's prompts.

Sessions that have not been used for ``expiry_s`` seconds are closed on the next request; at
most ``max_sessions`` are kept (the least recently used goes first), which bounds the memory a
busy server holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sam2s.predictor.video import PropagationPass, Session

__all__ = ["ImageSession", "PropagationCursor", "SessionKey", "SessionStore"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionKey:
    """Who is annotating what.

    Attributes:
        client: the client id MONAI Label clients send (``client_id``), or the id of the MONAI
            Label session the image was uploaded to.
        image: the datastore image id, or the uploaded session's image path.
        reading: how the image is read (axis, window, frame stack), as a hashable tuple; the
            same image read along another axis is another session.
    """

    client: str
    image: str
    reading: tuple


@dataclass
class PropagationCursor:
    """Where a propagation that is fetched in chunks (``chunk_frames``) stands.

    Attributes:
        passes: the passes :meth:`sam2s.Session.plan` made for the requested direction.
        pass_limit: at most this many frames per pass (the request's ``max_frames``), or ``None``.
        total: frames the whole propagation yields, for progress.
        pass_index: the pass being run.
        next_frame: the next frame of that pass, ``None`` at its start.
        pass_done: frames yielded so far in that pass.
        done: frames yielded so far in all passes.
    """

    passes: list[PropagationPass]
    pass_limit: int | None
    total: int
    pass_index: int = 0
    next_frame: int | None = None
    pass_done: int = 0
    done: int = 0

    @property
    def finished(self) -> bool:
        return self.pass_index >= len(self.passes)


@dataclass
class ImageSession:
    """One annotator's state on one image.

    Attributes:
        session: the predictor session (objects, prompts, memories).
        info: what the task needs to know about the opened image (geometry, kind), set by the opener.
        object_names: the label name each object was given, by object id (``None``: unnamed).
        cursor: the propagation being fetched in chunks, if any.
        last_used: monotonic time of the last request.
    """

    session: Session
    info: object
    object_names: dict[int, str | None] = field(default_factory=dict)
    cursor: PropagationCursor | None = None
    last_used: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        self.cursor = None
        self.session.close()


class SessionStore:
    """Keeps :class:`ImageSession` objects by :class:`SessionKey`, closing idle ones.

    Args:
        expiry_s: close a session unused for this many seconds.
        max_sessions: keep at most this many; opening one more closes the least recently used.
        clock: seconds, monotonic (tests pass a fake one).

    The store is thread-safe; a request holds :attr:`lock` while it works on a session, so two
    requests never change one session at once.
    """

    def __init__(
        self, expiry_s: float = 3600.0, max_sessions: int = 16, clock: Callable[[], float] = time.monotonic
    ):
        if expiry_s <= 0:
            raise ValueError(f"session expiry must be positive seconds, got {expiry_s}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be at least 1, got {max_sessions}")
        self.expiry_s = float(expiry_s)
        self.max_sessions = int(max_sessions)
        self.clock = clock
        self.lock = threading.RLock()
        self._sessions: OrderedDict[SessionKey, ImageSession] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, key: SessionKey) -> bool:
        return key in self._sessions

    def keys(self) -> list[SessionKey]:
        return list(self._sessions)

    def get_or_open(self, key: SessionKey, opener: Callable[[], ImageSession]) -> ImageSession:
        """The session of ``key``, opened with ``opener()`` when there is none (or it expired)."""
        with self.lock:
            self.expire()
            found = self._sessions.get(key)
            if found is None:
                found = opener()
                while len(self._sessions) >= self.max_sessions:
                    oldest, evicted = self._sessions.popitem(last=False)
                    logger.info(
                        "closing the least recently used session %s (limit %d)", oldest, self.max_sessions
                    )
                    evicted.close()
                self._sessions[key] = found
            self._sessions.move_to_end(key)
            found.last_used = self.clock()
            return found

    def expire(self) -> list[SessionKey]:
        """Close every session idle for longer than the expiry; returns their keys."""
        with self.lock:
            now = self.clock()
            expired = [key for key, s in self._sessions.items() if now - s.last_used > self.expiry_s]
            for key in expired:
                logger.info("session %s expired after %.0f s idle", key, self.expiry_s)
                self._sessions.pop(key).close()
            return expired

    def drop(self, key: SessionKey) -> None:
        """Close and forget one session (no error when it is not there)."""
        with self.lock:
            found = self._sessions.pop(key, None)
            if found is not None:
                found.close()

    def clear(self) -> None:
        with self.lock:
            for found in self._sessions.values():
                found.close()
            self._sessions.clear()
