"""The MONAI Label integration: a real ``monailabel start_server`` with the SAM2S app.

One server is started for the whole module (127.0.0.1, a free port, the reduced model with
random weights from a temporary checkpoint, selected by ``--conf``) and stopped by its PID at
the end, whatever happens. Images are uploaded through the datastore API (an NRRD volume with
an oblique geometry and an MP4 made with PyAV); every returned label is checked against what
the in-process predictor gives for the same prompts, pixel for pixel.

MONAI Label's wheel installs a top-level ``tests`` package: nothing here imports ``tests.*``,
and MONAI Label itself is only imported by the server process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import requests
import SimpleITK as sitk
import torch
from requests_toolbelt.multipart.decoder import MultipartDecoder

import sam2s
from sam2s.checkpoint import save_checkpoint
from sam2s.data.sources import ArraySource
from sam2s.evaluation.metrics import dice as volume_dice
from sam2s.monailabel import (
    IndexLayout,
    InferRequest,
    InteractiveSegmenter,
    RequestError,
    SessionKey,
    SessionStore,
    decode_mask,
)
from sam2s.monailabel.sessions import ImageSession
from sam2s.writers import label_map

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "sam2s" / "monailabel" / "app"
MODULE_DIR = ROOT / "SlicerSAM2S" / "SAM2S"

VOLUME_SHAPE = (6, 40, 48)  # (z, y, x) = (K, J, I)
VOLUME_SPACING = (0.8, 0.9, 2.5)
VOLUME_ORIGIN = (10.0, -20.0, 30.0)
VIDEO_SHAPE = (8, 48, 64)  # (T, H, W)
LABELS = ("tool", "tissue")  # --conf labels: tool = 1, tissue = 2
DRAWN_SLICE, DRAWN_ROWS, DRAWN_COLUMNS = 2, slice(12, 24), slice(14, 30)  # the Slicer segment

sys.path.insert(0, str(MODULE_DIR))  # the Slicer extension's packages, imported as Slicer does


def oblique_direction() -> tuple[float, ...]:
    a = 0.3
    rotation = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return tuple(rotation.ravel())


# ---------------------------------------------------------------------------------- data and model
@dataclass
class ImageFiles:
    volume: Path
    video: Path
    voxels: np.ndarray  # (z, y, x) int16


def write_volume(path: Path) -> np.ndarray:
    rng = np.random.default_rng(11)
    zz, yy, xx = np.mgrid[0 : VOLUME_SHAPE[0], 0 : VOLUME_SHAPE[1], 0 : VOLUME_SHAPE[2]]
    blob = ((yy - 18) ** 2 + (xx - 22) ** 2 < 90 + 8 * zz).astype(float)
    voxels = (blob * 600 + rng.random(VOLUME_SHAPE) * 300 - 100).astype(np.int16)
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing(VOLUME_SPACING)
    image.SetOrigin(VOLUME_ORIGIN)
    image.SetDirection(oblique_direction())
    sitk.WriteImage(image, str(path))
    return voxels


def write_video(path: Path) -> None:
    frames, height, width = VIDEO_SHAPE
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[..., 0] = 40 + 150 * (((xx - 20 - 3 * t) ** 2 + (yy - 22) ** 2) < 120)
            rgb[..., 1] = (xx * 3) % 200
            rgb[..., 2] = 90
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The server runs with one thread too (OMP_NUM_THREADS=1), so both sides add up floats alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> ImageFiles:
    folder = tmp_path_factory.mktemp("images")
    voxels = write_volume(folder / "volume.nrrd")
    write_video(folder / "clip.mp4")
    return ImageFiles(folder / "volume.nrrd", folder / "clip.mp4", voxels)


def nontrivial(mask: np.ndarray) -> bool:
    return 0.02 < float(np.mean(mask)) < 0.9


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data) -> Path:
    """Random mini weights whose masks are neither empty nor full on the test images
    (most random seeds give one or the other), saved where the server can load them."""
    for seed in range(32):
        torch.manual_seed(seed)
        model = sam2s.build_model("sam2.1_hiera_mini", checkpoint=None, device="cpu")
        predictor = sam2s.VideoPredictor(model)
        with predictor.start(data.volume) as session:
            slice_mask = session.add_prompt(3, 1, points=[[22, 18]], labels=[1]).masks[0].numpy()
            tracked = [out.masks[0].numpy() for out in session.propagate("both") if out.frame_index != 3]
        with predictor.start(data.video) as session:
            frame_mask = session.add_prompt(3, 1, points=[[30, 22]], labels=[1]).masks[0].numpy()
        drawn = np.zeros(VOLUME_SHAPE[1:], bool)
        drawn[DRAWN_ROWS, DRAWN_COLUMNS] = True
        with predictor.start(ArraySource(data.voxels)) as session:  # what the Slicer logic sends
            session.add_prompt(DRAWN_SLICE, 1, mask=drawn)
            tracked += [
                out.masks[0].numpy() for out in session.propagate("both") if out.frame_index != DRAWN_SLICE
            ]
        if nontrivial(slice_mask) and nontrivial(frame_mask) and sum(nontrivial(m) for m in tracked) >= 2:
            return save_checkpoint(model, tmp_path_factory.mktemp("weights") / "mini.pt", seed=seed)
    raise AssertionError("no seed gave non-trivial masks; the test images no longer exercise the task")


@pytest.fixture(scope="module")
def reference(checkpoint) -> sam2s.VideoPredictor:
    """The in-process predictor with the server's weights."""
    return sam2s.VideoPredictor(sam2s.build_model("sam2.1_hiera_mini", checkpoint=checkpoint, device="cpu"))


# ---------------------------------------------------------------------------------- the server
@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_server(process: subprocess.Popen) -> None:
    """Stop the server by its PID: SIGTERM (uvicorn shuts down cleanly), SIGKILL if it hangs."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


@contextlib.contextmanager
def running_server(root: Path, conf: dict[str, str], images: dict[str, Path]) -> Iterator[Server]:
    """``monailabel start_server`` with the SAM2S app on a free 127.0.0.1 port, ``--conf`` from
    ``conf``, ``images`` uploaded through the datastore API; stopped by its PID on exit."""
    log = root / "server.log"
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    port = free_port()
    command = [
        sys.executable, "-m", "monailabel.main", "start_server",
        "--app", str(APP_DIR), "--studies", str(root / "studies"),
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    for key, value in conf.items():
        command += ["--conf", key, value]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 150
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"the server exited with {process.returncode}:\n{log.read_text()[-4000:]}"
                )
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server did not answer in time:\n{log.read_text()[-4000:]}")
            time.sleep(0.5)
        for image_id, path in images.items():
            with open(path, "rb") as handle:
                answer = requests.put(
                    f"{url}/datastore/image",
                    params={"image": image_id},
                    files={"file": (path.name, handle)},
                    timeout=60,
                )
            assert answer.status_code == 200, answer.text
        yield Server(url, process, log)
    finally:
        stop_server(process)
        assert process.poll() is not None, "the server is still running after SIGKILL"


@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoint, data) -> Iterator[Server]:
    conf = {"model": "sam2.1_hiera_mini", "checkpoint": str(checkpoint), "device": "cpu", "labels": ",".join(LABELS)}
    with running_server(tmp_path_factory.mktemp("server"), conf, {"volume": data.volume, "clip": data.video}) as server:
        yield server


@dataclass
class Answer:
    status: int
    params: dict
    label: sitk.Image | None
    detail: str = ""

    @property
    def array(self) -> np.ndarray:
        return sitk.GetArrayFromImage(self.label)


def infer(
    server: Server, params, model: str = "sam2s", image: str | None = "volume", tmp: Path | None = None
) -> Answer:
    """``POST /infer/{model}`` as MONAI Label clients send it; the label is read with SimpleITK."""
    body = params if isinstance(params, str) else json.dumps(params)
    query = {} if image is None else {"image": image}
    response = requests.post(f"{server.url}/infer/{model}", params=query, data={"params": body}, timeout=120)
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", "")
        except ValueError:
            detail = response.text
        return Answer(response.status_code, {}, None, str(detail))
    parts = {}
    for part in MultipartDecoder(response.content, response.headers["content-type"]).parts:
        disposition = part.headers[b"Content-Disposition"].decode()
        name = disposition.split('name="')[1].split('"')[0]
        filename = disposition.split('filename="')[1].split('"')[0] if 'filename="' in disposition else None
        parts[name] = (filename, part.content)
    result = json.loads(parts["params"][1])
    filename, content = parts["image"]
    folder = Path(tmp or server.log.parent)
    path = folder / f"answer-{time.monotonic_ns()}-{filename}"
    path.write_bytes(content)
    return Answer(200, result, sitk.ReadImage(str(path)))


# ---------------------------------------------------------------------------------- tests: volume
def test_volume_clicks_and_propagation_equal_the_predictor(server, reference, data):
    assert (
        requests.get(f"{server.url}/info/", timeout=10).json()["models"]["sam2s"]["sam2s"]["device"] == "cpu"
    )
    prompt = {"client_id": "annotator-a", "foreground": [[22, 18, 3]], "background": [[3, 3, 3]]}

    answer = infer(server, prompt)  # 2D: the prompted slice only, NIfTI like MONAI Label's own tasks

    assert answer.status == 200, answer.detail
    label = answer.label
    assert label.GetSize() == VOLUME_SHAPE[::-1]
    np.testing.assert_allclose(label.GetSpacing(), VOLUME_SPACING, atol=1e-5)
    np.testing.assert_allclose(label.GetOrigin(), VOLUME_ORIGIN, atol=1e-4)
    np.testing.assert_allclose(label.GetDirection(), oblique_direction(), atol=1e-5)
    with reference.start(data.volume) as session:
        expected = session.add_prompt(3, 1, points=[[22, 18], [3, 3]], labels=[1, 0]).masks[0].numpy()
        tracked = {out.frame_index: out.masks[0].numpy() for out in session.propagate("both")}
    labels = answer.array
    assert nontrivial(labels[3])
    np.testing.assert_array_equal(labels[3] == 1, expected)
    assert not labels[[0, 1, 2, 4, 5]].any()
    assert answer.params["frames"] == [3] and answer.params["label_names"] == {"object_1": 1}

    # the same client propagates what it clicked, in both directions (no prompts re-sent)
    answer = infer(server, {"client_id": "annotator-a", "result_extension": ".nrrd"}, model="sam2s_propagate")

    assert answer.status == 200, answer.detail
    assert answer.params["frames"] == [3, 4, 5, 2, 1, 0] and answer.params["finished"]
    assert answer.params["progress"] == {"done": 6, "total": 6}
    for k in range(VOLUME_SHAPE[0]):
        np.testing.assert_array_equal(answer.array[k] == 1, tracked[k], err_msg=f"slice {k}")
    assert answer.label.GetOrigin() == pytest.approx(VOLUME_ORIGIN)  # NRRD keeps the geometry exactly


def test_volume_axis_maps_ijk_points_onto_frames(server, reference, data):
    """axis 2 (numpy x): index [i, j, k] is frame i at (x, y) = (j, k); a roi box likewise."""
    answer = infer(
        server,
        {"axis": 2, "foreground": [[22, 18, 3]], "roi": [22, 8, 22, 30, 1, 5], "result_extension": ".nrrd"},
    )

    assert answer.status == 200, answer.detail
    assert answer.params["session"] == "one-shot"  # no client id: nothing is kept
    assert answer.params["frames"] == [22] and answer.params["frame_index_axis"] == 0
    with reference.start(data.volume, axis=2) as session:
        expected = session.add_prompt(22, 1, points=[[18, 3]], labels=[1], box=[8, 1, 30, 5]).masks[0].numpy()
    assert expected.shape == (VOLUME_SHAPE[0], VOLUME_SHAPE[1])  # (z, y)
    labels = answer.array
    np.testing.assert_array_equal(labels[:, :, 22] == 1, expected)
    assert not np.delete(labels, 22, axis=2).any()


# ---------------------------------------------------------------------------------- tests: video
def test_video_propagates_both_ways_in_chunks_and_serves_several_labels(server, reference, data):
    with reference.start(data.video) as session:
        session.add_prompt(3, 1, points=[[30, 22]], labels=[1])
        tracked = [(out.frame_index, out.masks[0].numpy()) for out in session.propagate("both")]
    client = {"client_id": "video-annotator"}

    first = infer(server, {**client, "foreground": [[30, 22]], "frame": 3}, image="clip")
    assert first.status == 200, first.detail
    # the label holds only the frame that was asked for
    assert first.array.shape == (1, *VIDEO_SHAPE[1:]) and first.params["first_frame"] == 3
    np.testing.assert_array_equal(first.array[0] == 1, tracked[0][1])

    chunks, frames, masks = [], [], {}
    answer = infer(server, {**client, "propagate": "both", "chunk_frames": 3}, image="clip")
    while True:
        assert answer.status == 200, answer.detail
        params = answer.params
        chunks.append(params["frames"])
        frames += params["frames"]
        assert params["progress"] == {"done": len(frames), "total": VIDEO_SHAPE[0]}
        block = answer.array  # (frames from first_frame, H, W): the computed frames only
        for frame in params["frames"]:
            masks[frame] = block[frame - params["first_frame"]] == 1
        if params["finished"]:
            break
        answer = infer(server, {**client, "resume": True, "chunk_frames": 3}, image="clip")
    assert chunks == [[3, 4, 5], [6, 7], [2, 1, 0]]  # one pass per chunk
    assert frames == [t for t, _ in tracked]
    for t, expected in tracked:
        np.testing.assert_array_equal(masks[t], expected, err_msg=f"frame {t}")

    # several objects in one request: named labels take their value, others their id
    several = {
        "client_id": "video-annotator",
        "reset": True,
        "objects": [
            {"label": "tissue", "foreground": [[12, 10, 5]]},
            {"id": 7, "foreground": [[40, 30, 5]], "background": [[12, 10, 5]]},
        ],
    }
    answer = infer(server, several, image="clip")
    assert answer.status == 200, answer.detail
    with reference.start(data.video) as session:
        session.add_prompt(5, 2, points=[[12, 10]], labels=[1])
        result = session.add_prompt(5, 7, points=[[40, 30], [12, 10]], labels=[1, 0])
    np.testing.assert_array_equal(answer.array[0], label_map([2, 7], result.masks.numpy()))
    assert answer.params["label_names"] == {"tissue": 2, "object_7": 7}  # the reset dropped object 1


# ---------------------------------------------------------------------------------- tests: sessions
def test_two_clients_interleave_and_see_only_their_own_objects(server, reference, data):
    a = {"client_id": "alice", "result_extension": ".nrrd"}
    b = {"client_id": "bob", "result_extension": ".nrrd"}

    first_a = infer(server, {**a, "reset": True, "foreground": [[22, 18, 3]]})
    first_b = infer(server, {**b, "objects": [{"id": 2, "foreground": [[30, 25, 1]]}]})
    both_a = infer(server, a, model="sam2s_propagate")
    both_b = infer(server, b, model="sam2s_propagate")

    for answer in (first_a, first_b, both_a, both_b):
        assert answer.status == 200, answer.detail
    assert first_a.params["label_names"] == both_a.params["label_names"] == {"object_1": 1}
    assert first_b.params["label_names"] == both_b.params["label_names"] == {"object_2": 2}
    assert set(np.unique(both_a.array)) <= {0, 1} and set(np.unique(both_b.array)) <= {0, 2}
    for answer, (frame, point, obj_id) in ((both_a, (3, [22, 18], 1)), (both_b, (1, [30, 25], 2))):
        with reference.start(data.volume) as session:
            session.add_prompt(frame, obj_id, points=[point], labels=[1])
            for out in session.propagate("both"):
                np.testing.assert_array_equal(answer.array[out.frame_index] == obj_id, out.masks[0].numpy())


def test_session_store_expires_idle_sessions_and_keeps_a_bounded_number(reference, data):
    now = [0.0]
    store = SessionStore(expiry_s=10, max_sessions=2, clock=lambda: now[0])
    opened = []

    def opener():
        session = reference.start(data.volume)
        opened.append(session)
        return ImageSession(session=session, info=None)

    a, b, c = (SessionKey(client, "volume", ()) for client in ("a", "b", "c"))
    first = store.get_or_open(a, opener)
    assert store.get_or_open(a, opener) is first and len(opened) == 1  # the same key: the same state
    now[0] = 5.0
    store.get_or_open(b, opener)
    now[0] = 12.0  # a idle 12 s > 10 s: closed; b idle 7 s: kept
    assert store.expire() == [a] and store.keys() == [b]
    store.get_or_open(c, opener)
    store.get_or_open(a, opener)  # a third session: the least recently used (b) is closed
    assert store.keys() == [c, a] and len(opened) == 3 + 1
    with pytest.raises(ValueError, match="expiry"):
        SessionStore(expiry_s=0)


def test_a_propagation_answers_at_most_the_frame_cap_and_resumes(reference, data, tmp_path):
    segmenter = InteractiveSegmenter(
        reference, SessionStore(), max_frames_per_request=2, result_folder=str(tmp_path)
    )
    request = {"image": str(data.volume), "image_id": "volume", "client_id": "c", "propagate": "both"}

    _, first = segmenter({**request, "foreground": [[22, 18, 3]]})
    _, second = segmenter({"image": str(data.volume), "image_id": "volume", "client_id": "c", "resume": True})

    assert (first["frames"], first["finished"]) == ([3, 4], False)
    assert (second["frames"], second["finished"]) == ([5], False)  # the forward pass ends here
    assert first["progress"] == {"done": 2, "total": 6} and second["progress"]["done"] == 3

    # prompted on slice 0, "both" has nothing to do backwards: the forward pass finishes it
    uncapped = InteractiveSegmenter(reference, SessionStore(), result_folder=str(tmp_path))
    _, from_zero = uncapped({**request, "foreground": [[22, 18, 0]], "chunk_frames": 10})
    assert from_zero["frames"] == [0, 1, 2, 3, 4, 5] and from_zero["finished"]


# ---------------------------------------------------------------------------------- tests: settings
def test_app_settings_choose_model_device_and_sessions(checkpoint):
    from sam2s.monailabel.infer import AppSettings, build_segmenter

    conf = {
        "model": "sam2.1_hiera_mini",
        "checkpoint": str(checkpoint),
        "device": "cpu",
        "session_expiry": "90",
    }
    settings = AppSettings.from_conf({**conf, "labels": "grasper, liver"})
    segmenter = build_segmenter(settings)  # through bundle/configs/inference.json

    assert segmenter.predictor.model.config.name == "sam2.1_hiera_mini"
    assert str(segmenter.predictor.device) == "cpu" and segmenter.store.expiry_s == 90.0
    assert segmenter.label_ids == {"grasper": 1, "liver": 2}
    assert AppSettings.from_conf({}).labels[:2] == ("ligature", "grasper")  # the SAM2S vocabulary
    with pytest.raises(ValueError, match="--conf max_sessions must be an integer"):
        AppSettings.from_conf({"max_sessions": "many"})
    with pytest.raises(ValueError, match="--conf session_expiry must be at least"):
        AppSettings.from_conf({"session_expiry": "0"})


@pytest.mark.gpu
def test_cuda_is_chosen_by_the_server_config(checkpoint, data):
    from sam2s.monailabel.infer import AppSettings, build_segmenter

    conf = {"model": "sam2.1_hiera_mini", "checkpoint": str(checkpoint), "device": "cuda"}
    segmenter = build_segmenter(AppSettings.from_conf(conf))
    assert segmenter.predictor.device.type == "cuda"

    path, result = segmenter(
        {"image": str(data.volume), "image_id": "volume", "client_id": "gpu", "foreground": [[22, 18, 3]]}
    )

    labels = sitk.GetArrayFromImage(sitk.ReadImage(path))
    assert labels.shape == VOLUME_SHAPE and result["frames"] == [3]
    assert set(np.unique(labels)) <= {0, 1} and not np.delete(labels, 3, axis=0).any()


# ---------------------------------------------------------------------------------- tests: errors
@pytest.mark.parametrize(
    ("model", "image", "params", "status", "message"),
    [
        ("sam2s", "volume", "{bad json", 400, "not valid JSON"),
        ("sam2s", "volume", {"foreground": "22,18,3"}, 400, "'foreground' must be a list"),
        (
            "sam2s",
            "volume",
            {"foreground": [[22, 18, 3]], "propagate": "sideways"},
            400,
            "'propagate' must be one of",
        ),
        ("sam2s", "volume", {"foreground": [[480, 18, 3]]}, 400, "outside the image"),
        ("sam2s", "volume", {"foreground": [[22, 18, 6]]}, 400, "outside the image"),
        ("sam2s", "volume", {"foreground": [[22, 18]]}, 400, "'frame'"),
        (
            "sam2s",
            "volume",
            {"objects": [{"label": "spleen", "foreground": [[1, 1, 1]]}]},
            400,
            "unknown label 'spleen'",
        ),
        (
            "sam2s",
            "volume",
            {"masks": [{"frame": 1, "shape": [40, 48], "bits": "AAAA"}]},
            400,
            "'bits' holds",
        ),
        ("sam2s", "volume", {}, 400, "no prompts"),
        ("sam2s", "clip", {"axis": 1, "foreground": [[1, 1, 1]]}, 400, "cannot read image"),
        ("sam2s", "nope", {"foreground": [[1, 1, 1]]}, 404, "unknown image 'nope'"),
        ("deepedit", "volume", {"foreground": [[1, 1, 1]]}, 404, "unknown model 'deepedit'"),
        ("sam2s", "volume", {"client_id": "nobody", "resume": True}, 409, "nothing to resume"),
    ],
)
def test_malformed_requests_get_a_clear_4xx(server, model, image, params, status, message):
    answer = infer(server, params, model=model, image=image)

    assert answer.status == status, (answer.status, answer.detail)
    assert message in answer.detail


def test_the_server_keeps_serving_after_bad_requests(server):
    assert infer(server, "{bad json").status == 400
    assert infer(server, {"foreground": [[999, 0, 0]]}).status == 400
    answer = infer(server, {"foreground": [[22, 18, 3]]})
    assert answer.status == 200 and answer.array[3].any()
    assert server.process.poll() is None


# ---------------------------------------------------------------------------------- tests: protocol
def test_index_layout_maps_every_axis_like_the_volume_source():
    size = (48, 40, 6)  # (I, J, K)
    assert IndexLayout(0, size).point_to_frame([5, 7, 2], None, "p") == (2, 5.0, 7.0)
    assert IndexLayout(1, size).point_to_frame([5, 7, 2], None, "p") == (7, 5.0, 2.0)
    assert IndexLayout(2, size).point_to_frame([5, 7, 2], None, "p") == (5, 7.0, 2.0)
    assert IndexLayout(0, size).frame_size == (40, 48) and IndexLayout(2, size).frame_size == (6, 40)
    with pytest.raises(RequestError, match="whole number"):
        IndexLayout(0, size).point_to_frame([5, 7, 2.5], None, "p")
    from SAM2SLib.remotebackend import encodeMask  # the Slicer side's encoder, read by the server's decoder

    mask = np.random.default_rng(0).random((5, 11)) > 0.5
    np.testing.assert_array_equal(decode_mask(encodeMask(mask)), mask)
    request = InferRequest.from_params({"slice": -1, "foreground": [[1, 2, 3]]}, {})
    assert request.frame is None and request.objects[0].obj_id == 1  # MONAI Label's "no slice"


def test_remote_nrrd_files_read_and_write_like_simpleitk(tmp_path):
    from SAM2SLib.remotebackend import readNrrd, writeNrrd

    grey = (np.random.default_rng(1).random((3, 5, 7)) * 1000).astype(np.int16)
    rgb = (np.random.default_rng(2).random((2, 5, 7, 3)) * 255).astype(np.uint8)
    for frames in (grey, rgb):
        path = tmp_path / "frames.nrrd"
        path.write_bytes(writeNrrd(frames))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), frames)
    labels = np.random.default_rng(3).integers(0, 300, (4, 6, 5)).astype(np.uint16)
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(tmp_path / "labels.nrrd"), useCompression=True)
    np.testing.assert_array_equal(readNrrd((tmp_path / "labels.nrrd").read_bytes()), labels)


# ---------------------------------------------------------------------------------- tests: Slicer
def slicer_volume_scene(voxels: np.ndarray):
    """A headless scene with ``voxels`` ((K, J, I)) as a volume and a segment drawn on slice k = 2."""
    import slicer
    import vtk
    from SAM2SLib.mrmlio import ensureSegmentationConverterRules, ensureSequenceNodeClasses
    from vtk.util import numpy_support

    ensureSegmentationConverterRules()
    scene = slicer.vtkMRMLScene()
    ensureSequenceNodeClasses(scene)
    volume = slicer.vtkMRMLScalarVolumeNode()
    scene.AddNode(volume)
    image = vtk.vtkImageData()
    image.SetDimensions(voxels.shape[2], voxels.shape[1], voxels.shape[0])
    image.AllocateScalars(numpy_support.get_vtk_array_type(voxels.dtype), 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = voxels.ravel()
    volume.SetAndObserveImageData(image)
    volume.SetSpacing(*VOLUME_SPACING)
    volume.SetOrigin(*VOLUME_ORIGIN)
    segmentation = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(segmentation)
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    segment_id = segmentation.GetSegmentation().AddEmptySegment("tool", "tool")
    drawn = np.zeros(voxels.shape, np.uint8)
    drawn[DRAWN_SLICE, DRAWN_ROWS, DRAWN_COLUMNS] = 1
    labelmap = slicer.vtkOrientedImageData()
    labelmap.SetExtent(0, voxels.shape[2] - 1, 0, voxels.shape[1] - 1, 0, voxels.shape[0] - 1)
    labelmap.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars())[:] = drawn.ravel()
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    labelmap.SetImageToWorldMatrix(matrix)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(labelmap, segmentation, segment_id, logic.MODE_REPLACE)
    return scene, volume, segmentation, segment_id  # the caller keeps the scene alive


def segment_voxels(segmentation, segment_id) -> tuple[tuple, np.ndarray]:
    import slicer
    from vtk.util import numpy_support

    labelmap = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    values = numpy_support.vtk_to_numpy(labelmap.GetPointData().GetScalars()).copy()
    return labelmap.GetExtent(), values


def test_slicer_remote_backend_gives_the_local_segment_with_progress_and_cancel(server, reference, data):
    import SAM2S
    from SAM2SLib.backend import ModelSettings, createBackend
    from SAM2SLib.localbackend import LocalBackend
    from SAM2SLib.remotebackend import RemoteBackend

    remote = RemoteBackend(server.url, chunkFrames=2)
    outcomes = {}
    for name, backend in (("local", LocalBackend(predictor=reference)), ("remote", remote)):
        scene, volume, segmentation, segment_id = slicer_volume_scene(data.voxels)
        logic = SAM2S.SAM2SLogic(backend=backend)
        events = []
        result = logic.propagateSegment(
            volume, segmentation, segment_id, direction="both",
            onFrame=lambda p, done, total, events=events: events.append((p.frameIndex, done, total)),
        )  # fmt: skip
        request = logic.preparePropagation(volume, segmentation, segment_id, direction="both")
        preview = logic.previewFrame(request, 2)
        outcomes[name] = (result, events, segment_voxels(segmentation, segment_id), preview)
        del scene

    local, remote_outcome = outcomes["local"], outcomes["remote"]
    assert remote_outcome[1] == local[1]  # the same frames, in the same order, with the same progress
    assert sorted(local[0].predictions) == list(range(VOLUME_SHAPE[0]))
    for frame, masks in local[0].predictions.items():
        np.testing.assert_array_equal(remote_outcome[0].predictions[frame][segment_id], masks[segment_id])
    assert any(nontrivial(m[segment_id]) for f, m in local[0].predictions.items() if f != DRAWN_SLICE)
    assert remote_outcome[2][0] == local[2][0]
    np.testing.assert_array_equal(remote_outcome[2][1], local[2][1])  # the same segment in the scene
    np.testing.assert_array_equal(remote_outcome[3].masks[segment_id], local[3].masks[segment_id])

    # a preview click while a propagation is under way does not disturb it (two server sessions)
    _scene, volume, segmentation, segment_id = slicer_volume_scene(data.voxels)
    request = SAM2S.SAM2SLogic(backend=remote).preparePropagation(volume, segmentation, segment_id)
    running = remote.propagate(request.frames, request.prompts, "both")
    predictions = [next(running)]
    assert remote.predictFrame(request.frames, DRAWN_SLICE, request.prompts).frameIndex == DRAWN_SLICE
    predictions += list(running)
    assert [p.frameIndex for p in predictions] == [e[0] for e in local[1]]
    for prediction in predictions:
        expected = local[0].predictions[prediction.frameIndex][segment_id]
        np.testing.assert_array_equal(prediction.masks[segment_id], expected)

    # the backend's own progress callback, and cancelling after the first frame
    reported = []
    list(
        remote.propagate(
            request.frames, request.prompts, "forward", lambda done, total: reported.append((done, total))
        )
    )
    assert reported == [(1, 4), (2, 4), (3, 4), (4, 4)]
    before = segment_voxels(segmentation, segment_id)
    cancel = threading.Event()
    cancelled = SAM2S.SAM2SLogic(backend=remote).propagateSegment(
        volume, segmentation, segment_id, onFrame=lambda *_: cancel.set(), cancelEvent=cancel
    )
    assert cancelled.cancelled
    after = segment_voxels(segmentation, segment_id)
    assert after[0] == before[0] and np.array_equal(after[1], before[1])

    # the effect picks the remote backend from one setting, and installs nothing for it
    assert isinstance(createBackend(ModelSettings(serverUrl=server.url)), RemoteBackend)
    assert isinstance(SAM2S.SAM2SLogic(serverUrl=server.url).backend, RemoteBackend)
    remote.close()


# ---------------------------------------------------------------------------------- the demo model
@pytest.mark.demo_model
def test_the_demo_model_segments_the_bundle_sample_ct_volume_over_http(tmp_path):
    """A server with its default settings serves the shipped demo model: each organ of the bundle's
    sample CT volume, given a box and a click on one slice, is propagated through the volume and
    compared with the ground-truth label map (3D Dice)."""
    sample = ROOT / "bundle" / "sample"
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(sample / "ct_volume_labels.nii.gz")))
    organs = json.loads((sample / "ct_volume_prompts.json").read_text())["objects"]
    conf = {"device": "cpu", "labels": ",".join(organ["name"] for organ in organs)}
    with running_server(tmp_path, conf, {"ct": sample / "ct_volume.nii.gz"}) as server:
        info = requests.get(f"{server.url}/info/", timeout=10).json()["models"]["sam2s"]
        assert info["sam2s"]["model"] == "sam2s_demo"
        dice = {}
        for label, organ in enumerate(organs, start=1):
            prompt = organ["prompts"][0]
            (x, y), k = prompt["points"][0], prompt["frame"]
            x0, y0, x1, y1 = prompt["box"]
            params = {"client_id": organ["name"], "foreground": [[x, y, k]], "roi": [x0, y0, x1, y1, k, k],
                      "label": organ["name"]}
            answer = infer(server, params, model="sam2s_propagate", image="ct", tmp=tmp_path)
            assert answer.status == 200, answer.detail
            assert answer.params["finished"] and answer.array.shape == truth.shape
            dice[organ["name"]] = volume_dice(answer.array == label, truth == organ["id"])
    assert np.mean(list(dice.values())) >= 0.55, dice
    assert min(dice.values()) >= 0.4, dice
