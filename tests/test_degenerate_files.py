"""Degenerate arrays and checkpoints, and weights that produce nothing: one line naming the file.

Never a traceback, never "Aborted.", and never the libraries' advice to load unsafely
(``allow_pickle`` / ``weights_only=False``).
"""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict_cli import invoke, small_checkpoint, small_config, write_arrays

from afsd_cli.data.npy import open_frames, open_npy
from afsd_cli.errors import CheckpointError, InputError, TrainingError
from afsd_cli.model.checkpoints import read_state_dict, read_torch_file

UNSAFE_ADVICE = ("allow_pickle", "weights_only=False", "weights_only` set to `False", "Traceback", "Aborted")


def frames_file(path: Path, frames: int = 4, channels: int = 3) -> Path:
    np.save(path, np.zeros((frames, 8, 8, channels), np.uint8))
    return path


def degenerate_arrays(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, the reason the reader must give)."""
    full = frames_file(folder / "full.npy").read_bytes()
    header_end = full.index(b"\n") + 1
    cases = {
        "zero": (b"", "empty file (0 bytes)"),
        "header_only": (full[:header_end], "truncated .npy file: its header announces [4, 8, 8, 3] uint8"),
        "truncated": (full[:header_end + 100], "truncated .npy file"),
        "cut_header": (full[:30], "truncated or corrupt .npy header"),
        "text": (b"frame,r,g,b\n0,1,2,3\n", "not a .npy file"),
    }
    files = {}
    for name, (data, reason) in cases.items():
        (folder / f"{name}.npy").write_bytes(data)
        files[name] = (folder / f"{name}.npy", reason)
    np.save(folder / "objects.npy", np.array([{"frames": 1}], dtype=object), allow_pickle=True)
    files["objects"] = (folder / "objects.npy", "holds Python objects")
    return files


def test_every_degenerate_array_gets_its_own_reason(tmp_path):
    for name, (path, reason) in degenerate_arrays(tmp_path).items():
        with pytest.raises(InputError) as info:
            open_npy(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and reason in message, name
        assert not any(advice in message for advice in UNSAFE_ADVICE), message


def test_good_arrays_stay_memory_mapped_and_are_checked(tmp_path):
    array = open_frames(frames_file(tmp_path / "ok.npy"), channels=3, crop_size=8)
    assert isinstance(array, np.memmap) and array.shape == (4, 8, 8, 3)
    with pytest.raises(InputError, match=r"expected flow frames \[T, H, W, 2\], got shape \[4, 8, 8, 3\]"):
        open_frames(tmp_path / "ok.npy", channels=2)
    with pytest.raises(InputError, match="no frames"):
        open_frames(frames_file(tmp_path / "empty.npy", frames=0), channels=3)
    np.save(tmp_path / "float.npy", np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="expected uint8 RGB frames, got dtype float32"):
        open_frames(tmp_path / "float.npy", channels=3)


class Payload:
    """Any class: unpickling it would mean running code."""


def degenerate_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    good = folder / "good.ckpt"
    torch.save({"a.weight": torch.ones(64)}, good)
    torch.save({"a.weight": torch.ones(64)}, folder / "legacy.ckpt", _use_new_zipfile_serialization=False)
    zipped, legacy = good.read_bytes(), (folder / "legacy.ckpt").read_bytes()
    frames_file(folder / "array.npy")
    cases = {
        "zero.ckpt": (b"", "empty file (0 bytes)"),
        "garbage.ckpt": (b"this is not a checkpoint", "not a PyTorch checkpoint"),
        "array.ckpt": ((folder / "array.npy").read_bytes(), "NumPy .npy array, not a PyTorch checkpoint"),
        "truncated.ckpt": (zipped[:len(zipped) // 2], "truncated or corrupt checkpoint"),
        "truncated_legacy.ckpt": (legacy[:len(legacy) // 2], "corrupt"),
    }
    files = {}
    for name, (data, reason) in cases.items():
        (folder / name).write_bytes(data)
        files[name] = (folder / name, reason)
    torch.save({"weights": Payload()}, folder / "code.ckpt")
    files["code.ckpt"] = (folder / "code.ckpt", "refused: the file holds Python objects")
    return files


def test_every_degenerate_checkpoint_gets_its_own_reason(tmp_path):
    for name, (path, reason) in degenerate_checkpoints(tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            read_state_dict(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and reason in message, (name, message)
        assert not any(advice in message for advice in UNSAFE_ADVICE), message
        assert "\n" not in message


def test_a_corrupt_training_state_is_a_training_error_without_unsafe_advice(tmp_path):
    (tmp_path / "state-3.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(TrainingError) as info:
        read_torch_file(tmp_path / "state-3.pt", error=TrainingError)
    assert "state-3.pt" in str(info.value)
    assert not any(advice in str(info.value) for advice in UNSAFE_ADVICE)


def check_one_line_failure(text: str, result, *needles: str) -> None:
    assert result.exit_code != 0, text
    assert not any(advice in text for advice in UNSAFE_ADVICE), text
    for needle in needles:
        assert needle in text, text


def test_predict_names_each_degenerate_array(tmp_path):
    broken = ("zero", "header_only", "text", "objects")
    write_arrays(tmp_path, {"good": 40, **{name: 40 for name in broken}})  # listed in the video info
    for name, (path, _) in degenerate_arrays(tmp_path).items():
        if name in broken:
            path.replace(tmp_path / "rgb" / path.name)
    config = small_config(tmp_path)
    checkpoint = small_checkpoint(tmp_path)
    result, text = invoke("predict", config, "--checkpoint", checkpoint, "-o", tmp_path / "det.json",
                          "--device", "cpu", "--all-or-nothing")
    check_one_line_failure(text, result, "4 bad input(s)", "zero.npy: empty file (0 bytes)",
                           "header_only.npy: truncated .npy file", "text.npy: not a .npy file",
                           "objects.npy: the array holds Python objects")
    assert not (tmp_path / "det.json").exists()
    # by default the good video runs and is written; each bad one is named, exit 1
    result, text = invoke("predict", config, "--checkpoint", checkpoint, "-o", tmp_path / "det.json", "--device", "cpu")
    check_one_line_failure(text, result, "zero.npy: empty file (0 bytes)", "objects.npy: the array holds Python objects")
    assert list(json.loads((tmp_path / "det.json").read_text())["results"]) == ["good"]


def test_predict_names_each_degenerate_checkpoint(tmp_path):
    write_arrays(tmp_path, {"good": 40})
    config = small_config(tmp_path)
    for name, (path, reason) in degenerate_checkpoints(tmp_path).items():
        result, text = invoke("predict", config, "--checkpoint", path, "-o", tmp_path / "det.json", "--device", "cpu")
        check_one_line_failure(text, result, name, reason)
        assert len([line for line in text.splitlines() if line.strip()]) == 1, text


def test_predict_refuses_a_nan_checkpoint(tmp_path):
    write_arrays(tmp_path, {"good": 40})
    path = small_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    state["coarse_pyramid_detection.conf_head.conv1d.weight"][1] = float("nan")
    torch.save(state, path)
    result, text = invoke("predict", small_config(tmp_path), "--checkpoint", path, "-o", tmp_path / "det.json", "--device", "cpu")
    check_one_line_failure(text, result, path.name, "non-finite weights",
                           "coarse_pyramid_detection.conf_head.conv1d.weight")
    assert not (tmp_path / "det.json").exists()


def test_non_finite_outputs_stop_prediction_instead_of_an_empty_result(tmp_path):
    from afsd_cli.data.annotations import thumos14_class_index
    from afsd_cli.engine.inference import Predictor
    from afsd_cli.engine.jobs import LoadedVideo, VideoJob
    from afsd_cli.engine.postprocess import PostprocessSettings
    from afsd_cli.model import AFSD, ModelSpec, load_checkpoint

    path = small_checkpoint(tmp_path)
    model = load_checkpoint(AFSD(ModelSpec(dataset="thumos14", num_classes=21, clip_length=64, crop_size=32)), path)
    with torch.no_grad():  # finite weights whose outputs overflow float32
        model.coarse_pyramid_detection.conf_head.conv1d.weight.fill_(3e38)
    frames = np.random.default_rng(0).integers(0, 255, (100, 32, 32, 3), dtype=np.uint8)
    jobs = [VideoJob("clip", lambda: LoadedVideo([frames]), 10.0, 10.0, "clip")]
    predictor = Predictor([model], PostprocessSettings(clip_length=64), thumos14_class_index().names,
                          clip_length=64, clip_stride=32, crop_size=32)
    with pytest.raises(CheckpointError, match=r"non-finite outputs \(NaN/inf\) for \d+ window\(s\), first video "
                                              r"'clip' frames 0-64") as info:
        list(predictor.run(jobs))
    assert info.value.path == str(path)
    # the same through the CLI: finite weights on file, one line, no empty result written
    state = torch.load(path, weights_only=True)
    state["coarse_pyramid_detection.conf_head.conv1d.weight"].fill_(3e38)
    torch.save(state, path)
    write_arrays(tmp_path, {"clip": 50})
    out = tmp_path / "det.json"
    result, text = invoke("predict", small_config(tmp_path), "--checkpoint", path, "-o", out, "--device", "cpu")
    check_one_line_failure(text, result, path.name, "non-finite outputs (NaN/inf)", "'clip' frames 0-64")
    assert not out.exists()
