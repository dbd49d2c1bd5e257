"""The MONAI bundle in bundle/: configs run through ``python -m monai.bundle``, metadata, large files.

The runs use the shipped demo model (bundle/models/model.pt): the sample run takes no argument at
all and its masks must reach J&F >= 0.75 against the sample's ground truth.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.bundle import ConfigWorkflow, verify_metadata

from sam2s.bundle import (
    DownloadError,
    HashMismatchError,
    MaskWriterSet,
    SegmentationWorkflow,
    fetch_large_files,
    find_bundle_root,
    read_large_files,
)
from sam2s.training.demo import score_sample_masks
from sam2s.writers import read_png_mask
from tests.parity import parity_model, synthetic_clip

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"
CONFIGS = BUNDLE / "configs"
SAMPLE = BUNDLE / "sample"
DEMO_MODEL = BUNDLE / "models" / "model.pt"
SAM21_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_{}.pt"


@pytest.fixture(scope="module")
def mini_checkpoint(tmp_path_factory) -> Path:
    """Random sam2.1_hiera_mini weights whose objects are confidently present (non-empty masks)."""
    path = tmp_path_factory.mktemp("weights") / "mini.pt"
    torch.save({"model": parity_model("sam2.1_hiera_mini", seed=1).state_dict()}, path)
    return path


def run_bundle(config: Path | str, *args: str, cwd: Path = ROOT, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = launcher or (sys.executable,)
    command = [*launcher, "-m", "monai.bundle", "run", "--config_file", str(config), *args]
    # A session of its own, so a run that hangs is stopped with every process it started.
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, encoding="utf-8", errors="replace", start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(command)} did not finish in 300 s:\n{stdout[-2000:]}{stderr[-2000:]}")
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    assert result.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return result


def count_video_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def masks_of(folder: Path) -> list[np.ndarray]:
    return [read_png_mask(p) for p in sorted((folder / "masks").glob("*.png"))]


# -- inference ---------------------------------------------------------------------------------


def test_inference_runs_on_the_shipped_sample_with_no_argument(tmp_path):
    """A copy of the bundle elsewhere runs from its parent folder; results land in bundle/eval."""
    bundle = tmp_path / "bundle"
    for part in ("configs", "sample", "docs"):
        shutil.copytree(BUNDLE / part, bundle / part)
    (bundle / "models").mkdir()
    shutil.copy(DEMO_MODEL, bundle / "models" / "model.pt")
    result = run_bundle(bundle / "configs" / "inference.json", cwd=tmp_path)

    out = bundle / "eval"
    assert f"masks:   {out / 'masks'}" in result.stdout
    assert f"overlay: {out / 'overlay.mp4'}" in result.stdout
    masks = masks_of(out)
    assert len(masks) == 32 and all(m.shape == (192, 256) for m in masks)
    assert count_video_frames(out / "overlay.mp4") == 32
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_written"] == 32 and len(summary["objects"]) == 5
    score = score_sample_masks(out / "masks", SAMPLE)
    assert score.jf >= 0.75, f"demo model J&F on the sample: {score.jf:.3f} {score.objects}"


def test_inference_segments_an_mp4_and_a_nifti_volume(tmp_path):
    # a 10-frame MP4 with one clicked object
    video = tmp_path / "clip.mp4"
    frames = synthetic_clip(10, height=72, width=96)
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = 72, 96, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    video_prompts = tmp_path / "clip_prompts.json"
    video_prompts.write_text(json.dumps({"objects": [{"id": 1, "prompts": [{"frame": 3, "points": [[40, 36]], "labels": [1]}]}]}))
    # an anisotropic, oblique 7-slice CT volume with one boxed object
    volume = tmp_path / "ct.nii.gz"
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(-200, 200, (7, 40, 48)).astype(np.int16))
    image.SetSpacing((0.7, 0.8, 3.0))
    image.SetOrigin((-10.0, 20.0, 5.0))
    image.SetDirection((0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(volume))
    volume_prompts = tmp_path / "ct_prompts.json"
    volume_prompts.write_text(json.dumps({"objects": [{"id": 2, "prompts": [{"frame": 3, "box": [10, 8, 30, 28]}]}]}))

    args = ["--device", "cpu", "--progress", "False"]
    run_bundle(CONFIGS / "inference.json", "--input", str(video), "--prompts", str(video_prompts),
               "--output_dir", str(tmp_path / "video_out"), *args)
    masks = masks_of(tmp_path / "video_out")
    assert len(masks) == 10 and all(m.shape == (72, 96) for m in masks)
    assert count_video_frames(tmp_path / "video_out" / "overlay.mp4") == 10

    run_bundle(CONFIGS / "inference.json", "--input", str(volume), "--prompts", str(volume_prompts),
               "--output_dir", str(tmp_path / "volume_out"), *args)
    assert len(masks_of(tmp_path / "volume_out")) == 7
    assert not (tmp_path / "volume_out" / "overlay.mp4").exists()
    for name in ("labels.nii.gz", "labels.seg.nrrd"):
        labels = sitk.ReadImage(str(tmp_path / "volume_out" / name))
        assert labels.GetSize() == image.GetSize(), name
        assert labels.GetSpacing() == pytest.approx(image.GetSpacing()), name
        assert labels.GetOrigin() == pytest.approx(image.GetOrigin()), name
        assert labels.GetDirection() == pytest.approx(image.GetDirection()), name
    assert set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "volume_out" / "labels.nii.gz"))))) <= {0, 2}


def test_mask_writer_set_chooses_the_writers(tmp_path):
    from sam2s.data.sources import ArraySource, open_source
    from sam2s.writers import LabelVolumeWriter, PngMaskWriter, SegNrrdWriter

    video = ArraySource(np.zeros((2, 8, 8, 3), np.uint8))
    assert [type(w) for w in MaskWriterSet()(tmp_path / "a", video, False)] == [PngMaskWriter]
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 8, 8), np.int16)), str(tmp_path / "ct.nrrd"))
    volume = open_source(tmp_path / "ct.nrrd")
    kinds = [type(w) for w in MaskWriterSet()(tmp_path / "b", volume, False)]
    assert kinds == [PngMaskWriter, LabelVolumeWriter, SegNrrdWriter]
    kinds = [type(w) for w in MaskWriterSet(label_volume=False)(tmp_path / "c", volume, False)]
    assert kinds == [PngMaskWriter, SegNrrdWriter]


def test_evaluate_prints_the_jf_table(tmp_path):
    from sam2s.data.synthetic import write_synthetic_dataset

    dataset = write_synthetic_dataset(tmp_path / "data", num_videos=1, num_frames=5, height=64, width=64,
                                      seed=3, progress=False).root
    result = run_bundle(CONFIGS / "evaluate.json", "--dataset_dir", str(dataset), "--protocol", "box",
                        "--output_dir", str(tmp_path / "report"), "--progress", "False", "--device", "cpu")
    assert "| subset | videos | J&F | J | F |" in result.stdout
    assert "| **average** | 1 |" in result.stdout
    report = json.loads((tmp_path / "report" / "results.json").read_text())
    assert report["protocol"] == "box"


# -- training ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def training_data(tmp_path_factory) -> Path:
    from sam2s.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("training_data")
    return write_synthetic_dataset(root, num_videos=2, num_frames=6, height=64, width=64, seed=5, progress=False).root


TRAIN_ARGS = ("--model", "sam2s_mini", "--steps_per_epoch", "2", "--device", "cpu", "--progress", "False")


def test_train_runs_a_few_steps_and_writes_a_checkpoint(tmp_path, training_data):
    import sam2s

    result = run_bundle(CONFIGS / "train.json", "--dataset_dir", str(training_data), "--output_dir", str(tmp_path),
                        "--batch_size", "1", *TRAIN_ARGS)
    assert f"trained 2 steps (1 x 2); weights: {tmp_path / 'model_final.pt'}" in result.stdout
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert "sam2s_mini" in (tmp_path / "train.log").read_text()
    model = sam2s.build_model("sam2s_mini", checkpoint=tmp_path / "model_final.pt")
    assert model.config.name == "sam2s_mini"


def test_multi_gpu_train_runs_under_torchrun_with_two_cpu_processes(tmp_path, training_data):
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    run_bundle(configs, "--dataset_dir", str(training_data), "--output_dir", str(tmp_path),
               "--batch_size_per_process", "1", *TRAIN_ARGS, launcher=torchrun)
    log = (tmp_path / "train.log").read_text()
    assert "2 process(es), gloo backend" in log and "global batch 2 clips" in log
    assert (tmp_path / "model_final.pt").is_file() and (tmp_path / "checkpoints" / "last.pt").is_file()


# -- configs in the model-zoo style ------------------------------------------------------------


@pytest.mark.parametrize("config, workflow_type", [("inference.json", "infer"), ("evaluate.json", "infer")])
def test_inference_configs_have_the_required_properties(config, workflow_type, mini_checkpoint):
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / config), meta_file=str(CONFIGS / "metadata.json"), logging_file=False,
        workflow_type=workflow_type, model="sam2.1_hiera_mini", checkpoint=str(mini_checkpoint), device="cpu",
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert Path(workflow.bundle_root) == BUNDLE
    assert workflow.version == "0.2.0" and workflow.monai_version and workflow.pytorch_version
    network = workflow.network_def
    assert network.config.name == "sam2.1_hiera_mini" and not network.training
    assert workflow.inferer.model is network
    assert len(workflow.dataset) >= 1
    if config == "inference.json":
        assert isinstance(workflow.evaluator, SegmentationWorkflow)
        assert isinstance(workflow.evaluator.postprocessing, MaskWriterSet)
        assert workflow.dataset[0].input == SAMPLE / "surgery_clip.mp4"
        # the memory policy comes from the network's config (SAM 2 window for SAM 2.1 models)
        assert type(workflow.parser.get_parsed_content("memory_policy")()).__name__ == "SAM2WindowPolicy"


@pytest.mark.parametrize("configs", [["train.json"], ["train.json", "multi_gpu_train.json"]])
def test_train_configs_have_the_required_properties(configs, monkeypatch):
    from sam2s.bundle import TrainingWorkflow
    from sam2s.training import TrainConfig

    monkeypatch.setenv("WORLD_SIZE", "4")  # what torchrun would set; nothing is launched here
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / name) for name in configs], meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False, workflow_type="train", max_epochs=3, steps_per_epoch=5,
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.max_epochs == 3 and Path(workflow.dataset_dir) == SAMPLE / "surgery_clip"
    trainer = workflow.trainer
    assert isinstance(trainer, TrainingWorkflow) and isinstance(trainer.config, TrainConfig)
    assert trainer.config.steps == 15 and trainer.config.model == "sam2s_demo"
    assert trainer.config.data.videos == [str(SAMPLE / "surgery_clip")]
    assert trainer.config.sampling.hybrid and trainer.config.sampling.num_long_term == 2  # DiveMem clips
    if "multi_gpu_train.json" in configs:
        assert trainer.config.device == "cuda" and trainer.config.batch_size == 4 * 2 and trainer.require_torchrun
        monkeypatch.delenv("WORLD_SIZE")
        with pytest.raises(RuntimeError, match="launch it with torchrun"):
            trainer.run()
    else:
        assert trainer.config.device == "auto" and not trainer.require_torchrun


def test_bundle_root_is_found_from_the_bundle_or_its_parent(tmp_path):
    assert Path(find_bundle_root(BUNDLE)) == BUNDLE
    assert Path(find_bundle_root(ROOT)) == BUNDLE
    copy = tmp_path / "bundle"
    shutil.copytree(CONFIGS, copy / "configs")
    assert Path(find_bundle_root(tmp_path)) == copy


# -- metadata ----------------------------------------------------------------------------------


def test_verify_metadata_runs_offline_against_the_local_schema(tmp_path, monkeypatch):
    import monai.apps.utils

    def no_network(*args, **kwargs):
        raise AssertionError("verify_metadata tried to download its schema")

    monkeypatch.setattr(monai.apps.utils, "_download_with_progress", no_network)
    schema = BUNDLE / "docs" / "metadata_schema.json"
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema))

    metadata = json.loads((CONFIGS / "metadata.json").read_text())
    assert {"image", "points", "point_labels", "boxes", "masks"} <= set(metadata["network_data_format"]["inputs"])
    assert any("2511.16618" in ref for ref in metadata["references"])
    assert any("2408.00714" in ref for ref in metadata["references"])
    assert metadata["changelog"][metadata["version"]]
    # the schema rejects metadata that misses a required field
    for field, where in (("copyright", metadata), ("dtype", metadata["network_data_format"]["outputs"]["pred"])):
        broken = json.loads(json.dumps(metadata))
        target = broken if where is metadata else broken["network_data_format"]["outputs"]["pred"]
        del target[field]
        (tmp_path / "broken.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=f"'{field}' is a required property"):
            verify_metadata(meta_file=str(tmp_path / "broken.json"), filepath=str(schema))


# -- large files -------------------------------------------------------------------------------


def test_large_files_list_the_official_sam21_checkpoints_without_made_up_hashes():
    entries = read_large_files(BUNDLE)
    assert [e.url for e in entries] == [SAM21_URL.format(size) for size in ("tiny", "small", "base_plus", "large")]
    assert all(e.hash_val is None for e in entries)  # Meta publishes no checksums
    assert all(e.path.startswith("models/") for e in entries)


def _local_bundle(tmp_path: Path, payload: bytes, stated_hash: str) -> Path:
    source = tmp_path / "server" / "weights.pt"
    source.parent.mkdir(parents=True)
    source.write_bytes(payload)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "large_files.yml").write_text(
        "large_files:\n"
        f"  - path: models/weights.pt\n    url: {source.as_uri()}\n    hash_val: \"{stated_hash}\"\n    hash_type: sha256\n"
    )
    return bundle


def test_download_checks_the_hash(tmp_path):
    payload = os.urandom(3000)
    right = hashlib.sha256(payload).hexdigest()
    bundle = _local_bundle(tmp_path / "good", payload, right)
    (path,) = fetch_large_files(bundle, names=["weights"], progress=False)
    assert path == bundle / "models" / "weights.pt" and path.read_bytes() == payload
    assert fetch_large_files(bundle, progress=False) == [path]  # present and matching: kept

    bundle = _local_bundle(tmp_path / "bad", payload, "0" * 64)
    with pytest.raises(HashMismatchError, match=f"has sha256 {right}, but large_files.yml states 0000"):
        fetch_large_files(bundle, progress=False)
    assert list((bundle / "models").iterdir()) == []  # nothing half-written or unchecked is kept
    with pytest.raises(DownloadError, match=r"\['sam2.1_hiera_tiny'\] not in"):
        fetch_large_files(bundle, names=["sam2.1_hiera_tiny"], progress=False)


def test_monai_download_large_files_reads_the_same_list(tmp_path):
    from monai.apps.utils import HashCheckError
    from monai.bundle import download_large_files

    payload = os.urandom(2000)
    bundle = _local_bundle(tmp_path / "good", payload, hashlib.sha256(payload).hexdigest())
    download_large_files(bundle_path=str(bundle))
    assert (bundle / "models" / "weights.pt").read_bytes() == payload

    bundle = _local_bundle(tmp_path / "bad", payload, "f" * 64)
    with pytest.raises(HashCheckError):
        download_large_files(bundle_path=str(bundle))
    assert not (bundle / "models" / "weights.pt").exists()


# -- the sample --------------------------------------------------------------------------------


def test_the_sample_is_small_and_consistent():
    from sam2s.data.sources import open_source
    from sam2s.prompts import load_prompts

    assert sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file()) < 2 * 1024 * 1024
    source = open_source(SAMPLE / "surgery_clip.mp4")
    annotations = sorted((SAMPLE / "surgery_clip" / "Annotations" / "surgery_clip").glob("*.png"))
    assert source.num_frames == len(annotations) == 32 and (source.height, source.width) == (192, 256)
    source.close()
    assert len(load_prompts(SAMPLE / "surgery_clip_prompts.json").objects) == 5
    image = sitk.ReadImage(str(SAMPLE / "ct_volume.nii.gz"))
    labels = sitk.ReadImage(str(SAMPLE / "ct_volume_labels.nii.gz"))
    assert image.GetSize() == labels.GetSize() and image.GetDirection() == pytest.approx(labels.GetDirection())
    truth = sitk.GetArrayFromImage(labels)
    for obj in load_prompts(SAMPLE / "ct_volume_prompts.json").objects:
        (prompt,) = obj.prompts
        x, y = prompt.points[0]
        assert truth[prompt.frame, int(y), int(x)] == obj.obj_id  # the click is on its organ
