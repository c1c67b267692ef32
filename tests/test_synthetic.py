"""The synthetic demo dataset: determinism, files in the THUMOS14 formats, annotations that match
what is actually drawn in the encoded videos."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from afsd_cli.data import synthetic
from afsd_cli.data.annotations import read_class_index, read_thumos_annotations, read_video_info_csv
from afsd_cli.errors import InputError

# Small and short, so the whole module renders a few hundred frames.
SMALL = dict(
    num_videos=3,
    num_classes=3,
    fps=30,
    size=(96, 72),
    video_seconds=(4.0, 5.0),
    action_seconds=(1.0, 1.5),
    actions_per_video=(1, 2),
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    calls = []
    summary = synthetic.render_dataset(out, seed=7, progress=lambda done, total, name: calls.append((done, total)), **SMALL)
    return out, summary, calls


def _decode(path):
    import cv2

    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return fps, np.stack(frames)


def _coloured_pixels(frames_bgr):
    """Pixels per frame that are strongly saturated (objects), the grey background has none."""
    import cv2

    counts = []
    for frame in frames_bgr:
        hsv = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV)
        counts.append(int(((hsv[..., 1] > 120) & (hsv[..., 2] > 70)).sum()))
    return np.array(counts)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_layout_and_summary(dataset):
    out, summary, calls = dataset
    assert summary["videos"] == {"train": 2, "test": 1}
    assert summary["classes"] == ["Bounce", "Slide", "Spin"]
    assert calls[-1] == (3, 3) and len(calls) == 3
    for split in ("train", "test"):
        videos = sorted(p.stem for p in (out / "videos" / split).glob("*.mp4"))
        assert len(videos) == summary["videos"][split]
        listed = sorted({row["video"] for row in _rows(out / "annotations" / f"{split}_Annotation.csv")})
        assert listed == videos  # every video has at least one instance
    for key, path in summary["paths"].items():
        assert Path(path).exists(), key


def test_same_seed_same_bytes_and_pixels(dataset, tmp_path):
    out, _, _ = dataset
    again = tmp_path / "again"
    synthetic.render_dataset(again, seed=7, **SMALL)
    for name in ("train_Annotation.csv", "test_Annotation.csv", "classes.txt", "gt.json", "test_video_info.csv"):
        assert (out / "annotations" / name).read_bytes() == (again / "annotations" / name).read_bytes(), name
    for video in (out / "videos").rglob("*.mp4"):
        twin = again / video.relative_to(out)
        assert np.array_equal(_decode(video)[1], _decode(twin)[1]), video.name

    other = synthetic.plan_dataset(seed=8, **SMALL)
    assert other != synthetic.plan_dataset(seed=7, **SMALL)


def test_videos_readable_with_declared_fps_and_count(dataset):
    out, _, _ = dataset
    for split in ("train", "test"):
        infos = read_video_info_csv(out / "annotations" / f"{split}_video_info.csv")
        for name, info in infos.items():
            fps, frames = _decode(out / "videos" / split / f"{name}.mp4")
            assert fps == pytest.approx(30.0)
            assert frames.shape == (int(info.count), 72, 96, 3)
            # The expected sample count is what the official 10 fps accumulator keeps.
            from afsd_cli.data.video import accumulator_keep_indices

            assert info.sample_count == len(accumulator_keep_indices(int(info.count), fps))


def test_object_visible_exactly_inside_annotated_intervals(dataset):
    out, _, _ = dataset
    for split in ("train", "test"):
        rows = _rows(out / "annotations" / f"{split}_Annotation.csv")
        for video in sorted({r["video"] for r in rows}):
            _, frames = _decode(out / "videos" / split / f"{video}.mp4")
            expected = np.zeros(len(frames), dtype=bool)
            for r in (r for r in rows if r["video"] == video):
                start, end = int(r["startFrame"]), int(r["endFrame"])
                # Seconds (1 decimal) and native frames describe the same instant.
                assert start == round(float(r["start"]) * 30) and end == round(float(r["end"]) * 30)
                expected[start:end] = True
            coloured = _coloured_pixels(frames)
            # Codec ghosts may leave a few coloured pixels for a frame after an instance ends:
            # require a tenfold separation rather than exact zeros.
            assert coloured[expected].min() > 40, video
            assert coloured[~expected].max() < 0.1 * coloured[expected].min(), video
            # Background stays visible before the first and after the last instance.
            assert not expected[0] and not expected[-1]


def test_instances_do_not_overlap_and_classes_are_balanced():
    specs = synthetic.plan_dataset(num_videos=24, num_classes=4, seed=3)
    per_class = np.zeros(4, dtype=int)
    for spec in specs:
        previous_end = 0
        for inst in spec.instances:
            assert inst.start_frame > previous_end  # a gap of background between instances
            assert inst.end_frame > inst.start_frame
            previous_end = inst.end_frame
            per_class[inst.class_id] += 1
        assert previous_end < spec.num_frames
    # A shuffled cycle per split: class counts differ by at most one per split.
    assert per_class.max() - per_class.min() <= 2


def test_files_parse_with_the_project_readers(dataset):
    out, _, _ = dataset
    classes = read_class_index(out / "annotations" / "classes.txt")
    assert classes.names == ("Bounce", "Slide", "Spin")
    gt = json.loads((out / "annotations" / "gt.json").read_text())["database"]
    for split in ("train", "test"):
        infos = read_video_info_csv(out / "annotations" / f"{split}_video_info.csv")
        annos = read_thumos_annotations(out / "annotations" / f"{split}_Annotation.csv", infos, classes)
        rows = _rows(out / "annotations" / f"{split}_Annotation.csv")
        assert sum(len(a) for a in annos.values()) == len(rows)
        for video, items in annos.items():
            entry = gt[video]
            assert entry["subset"] == split
            assert entry["duration"] == pytest.approx(infos[video].count / infos[video].fps)
            segments = [(a["segment"], a["label"]) for a in entry["annotations"]]
            video_rows = [r for r in rows if r["video"] == video]
            assert segments == [([float(r["start"]), float(r["end"])], r["type"]) for r in video_rows]
            assert [classes.name_of(a.label) for a in items] == [r["type"] for r in video_rows]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(num_classes=0), "num_classes"),
        (dict(num_classes=99), "num_classes"),
        (dict(num_videos=1), "num_videos"),
        (dict(fps=25), "multiple of 10"),
        (dict(size=(32, 32)), "at least 48"),
    ],
)
def test_bad_parameters_raise_input_error(options, message):
    with pytest.raises(InputError, match=message):
        synthetic.plan_dataset(**options)
