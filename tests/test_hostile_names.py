"""Video names in metadata files are data, never paths: a name that could lead outside the folder
it is joined to is refused with one line naming the file and the row, and nothing is written."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from afsd_cli.cli import app
from afsd_cli.errors import InputError
from afsd_cli.names import check_video_name, name_problem, shown_name

runner = CliRunner()

# One name per class of hostile name; "{outside}" becomes a real folder beside the inputs.
HOSTILE = {
    "parent": "../outside/x",
    "absolute": "{outside}/x",
    "separator": "sub/x",
    "backslash": "..\\outside\\x",
    "nul": "x\0y",
    "empty": "",
    "dot": ".",
    "dotdot": "..",
    "drive": "C:x",
}
ACCEPTED = ["video_test_0000004", "v_-abc_12", "my video.v2", "~x", "-x", "vidéo_日本", "..x", "x..", "ab:c", ".hidden"]


@pytest.mark.parametrize("name", ACCEPTED)
def test_plain_names_are_accepted(name):
    assert name_problem(name) is None
    assert check_video_name(name, "f.csv", "line 2") == name


def test_message_names_file_and_place_and_is_bounded():
    with pytest.raises(InputError) as info:
        check_video_name("../" + "a" * 10_000, "anno.csv", "line 7")
    message = str(info.value)
    assert message.startswith("anno.csv: line 7: video name '../aaa")
    assert "is not a plain file name" in message and "(10003 characters)" in message
    assert len(message) < 250
    with pytest.raises(InputError, match=r"video name 'a\\x00\\n' is not a plain file name"):
        check_video_name("a\0\n", "f", "entry 1")
    with pytest.raises(InputError, match="video name must be a string, got int"):
        check_video_name(3, "f", "entry 1")


# --------------------------------------------------------------------------- file writers


def csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def annotation_csv(folder: Path, name: str) -> tuple[Path, str]:
    rows = [["video", "type", "type_idx", "start", "end", "startFrame", "endFrame"],
            ["good", "Run", "7", "1.0", "2.0", "30", "60"], [name, "Run", "7", "1.0", "2.0", "30", "60"]]
    path = folder / "anno.csv"
    path.write_text(csv_text(rows))
    return path, "line 3"


def video_info_csv(folder: Path, name: str) -> tuple[Path, str]:
    rows = [["video", "fps", "sample_fps", "count", "sample_count"],
            ["good", "30.0", "10.0", "90.0", "30"], [name, "30.0", "10.0", "90.0", "30"]]
    path = folder / "info.csv"
    path.write_text(csv_text(rows))
    return path, "line 3"


def video_info_json(folder: Path, name: str) -> tuple[Path, str]:
    entry = {"subset": "validation", "duration": 3.0, "frame_num": 9, "fps": 3.0, "annotations": []}
    path = folder / "info.json"
    path.write_text(json.dumps({"good": entry, name: entry}))
    return path, "entry 2"


def anet_ground_truth(folder: Path, name: str) -> tuple[Path, str]:
    entry = {"subset": "validation", "duration": 3.0, "annotations": [{"segment": [0.5, 1.5], "label": "Run"}]}
    path = folder / "gt.json"
    path.write_text(json.dumps({"database": {"good": entry, name: entry}}))
    return path, "database entry 2"


def thumos_ground_truth_csv(folder: Path, name: str) -> tuple[Path, str]:
    rows = [["video", "type", "start", "end"], ["good", "Run", "1.0", "2.0"], [name, "Run", "1.0", "2.0"]]
    path = folder / "gt.csv"
    path.write_text(csv_text(rows))
    return path, "line 3"


def classifier_json(folder: Path, name: str) -> tuple[Path, str]:
    path = folder / "cuhk.json"
    path.write_text(json.dumps({"results": {"good": [0.2, 0.8], name: [0.5, 0.5]}, "class": ["Run", "Jump"]}))
    return path, "results entry 2"


# --------------------------------------------------------------------------- the commands


def thumos_config(folder: Path, info: Path) -> Path:
    path = folder / "thumos.yaml"
    path.write_text(f"dataset:\n  name: thumos14\n  testing:\n    video_info_path: {info}\n"
                    f"    video_data_path: {folder / 'arrays'}\ntesting:\n  output_path: {folder / 'out'}\n")
    return path


def anet_config(folder: Path, info: Path) -> Path:
    path = folder / "anet.yaml"
    path.write_text(f"dataset:\n  name: anet\n  testing:\n    video_info_path: {info}\n"
                    f"    video_mp4_path: {folder / 'arrays'}\ntesting:\n  output_path: {folder / 'out'}\n")
    return path


def prepare_thumos(folder: Path, name: str):
    anno, place = annotation_csv(folder, name)
    return ["prepare", folder / "videos", folder / "out", "--annotations", anno, "-j", "1"], anno, place


def prepare_anet(folder: Path, name: str):
    gt, place = anet_ground_truth(folder, name)
    return ["prepare", folder / "videos", folder / "out", "--dataset", "anet", "--annotations", gt, "-j", "1"], gt, place


def predict_thumos(folder: Path, name: str):
    info, place = video_info_csv(folder, name)
    return ["predict", thumos_config(folder, info), "--checkpoint", folder / "model.ckpt", "--device", "cpu"], info, place


def predict_anet(folder: Path, name: str):
    info, place = video_info_json(folder, name)
    return ["predict", anet_config(folder, info), "--checkpoint", folder / "model.ckpt", "--device", "cpu"], info, place


def predict_anet_classifier(folder: Path, name: str):
    info, _ = video_info_json(folder, "good")
    classifier, place = classifier_json(folder, name)
    args = ["predict", anet_config(folder, info), "--checkpoint", folder / "model.ckpt", "--device", "cpu",
            "--classifier", classifier]
    return args, classifier, place


def evaluate_json(folder: Path, name: str):
    gt, place = anet_ground_truth(folder, name)
    detections = folder / "det.json"
    detections.write_text(json.dumps({"results": {"good": [{"segment": [0.5, 1.5], "score": 0.9, "label": "Run"}]}}))
    return ["evaluate", detections, "--gt", gt, "-o", folder / "out" / "m.json"], gt, place


def evaluate_csv(folder: Path, name: str):
    gt, place = thumos_ground_truth_csv(folder, name)
    detections = folder / "det.json"
    detections.write_text(json.dumps({"results": {"good": [{"segment": [1.0, 2.0], "score": 0.9, "label": "Run"}]}}))
    return ["evaluate", detections, "--gt", gt, "--dataset", "thumos14", "-o", folder / "out" / "m.json"], gt, place


COMMANDS = {
    "prepare annotation CSV": prepare_thumos,
    "prepare ActivityNet annotation JSON": prepare_anet,
    "predict video-info CSV": predict_thumos,
    "predict video-info JSON": predict_anet,
    "predict classifier JSON": predict_anet_classifier,
    "evaluate ground-truth JSON": evaluate_json,
    "evaluate ground-truth CSV": evaluate_csv,
}


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# Every pair but one: in the annotation CSV a row without a video names nothing, and prepare
# skips it as before (blank lines, trailing commas).
CASES = [(c, k) for c in COMMANDS for k in HOSTILE if (c, k) != ("prepare annotation CSV", "empty")]


@pytest.mark.parametrize("command, kind", CASES)
def test_hostile_name_is_refused_in_one_line_and_nothing_is_written(tmp_path, command, kind):
    inputs = tmp_path / "inputs"
    for folder in ("videos", "arrays", "outside"):
        (inputs / folder).mkdir(parents=True)
    (inputs / "outside" / "x.mp4").write_bytes(b"a file the hostile name points at")
    name = HOSTILE[kind].format(outside=inputs / "outside")
    args, metadata_file, place = COMMANDS[command](inputs, name)
    before = files_under(tmp_path)

    result = runner.invoke(app, [str(a) for a in args])
    output = result.stdout + (result.stderr if result.stderr_bytes is not None else "")

    assert result.exit_code == 1, output
    assert "Traceback" not in output
    assert output.strip().count("\n") == 0, output  # one line
    assert f"{metadata_file}: {place}: video name {shown_name(name)} is not a plain file name (" in output
    assert files_under(tmp_path) == before  # nothing written, inside the given folders or out of them


# --------------------------------------------------------------------------- readers without a cheap CLI path


def test_training_annotation_reader_refuses_hostile_names(tmp_path):
    from afsd_cli.data.annotations import read_thumos_annotations, read_video_info_csv

    info = tmp_path / "info.csv"
    info.write_text("video,fps,sample_fps,count,sample_count\ngood,30.0,10.0,90.0,30\n")
    anno, place = annotation_csv(tmp_path, "../x")
    with pytest.raises(InputError, match=rf"{place}: video name '../x' is not a plain file name"):
        read_thumos_annotations(anno, read_video_info_csv(info))


def test_plot_ground_truth_and_resume_info_readers_refuse_hostile_names(tmp_path):
    from afsd_cli.data.video_info import load_anet_video_info
    from afsd_cli.engine.plots import read_ground_truth

    gt, _ = anet_ground_truth(tmp_path, "/etc/x")
    with pytest.raises(InputError, match=r"entry 2: video name '/etc/x'"):
        read_ground_truth(gt)
    info, place = video_info_json(tmp_path, "..")
    with pytest.raises(InputError, match=rf"{place}: video name '\.\.'"):
        load_anet_video_info(info)
