"""A tiny THUMOS14-format training set (frame arrays + CSVs) and its config, for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from afsd_cli.config import build_config

# video -> (sample_count, [(start_frame, end_frame, original class index)])
TINY_VIDEOS = {
    "video_a": (48, [(6, 20, 7), (26, 40, 9)]),
    "video_b": (40, [(3, 7, 7), (12, 32, 9)]),  # th 4: the long one can be split
}


def write_tiny_dataset(root: Path, size: int = 40) -> dict[str, Path]:
    """Frames: dark textured background; actions are bright (class 7) or striped (class 9)."""
    rng = np.random.default_rng(0)
    data = root / "npy"
    data.mkdir(parents=True, exist_ok=True)
    info = ["video,fps,sample_fps,count,sample_count"]
    anno = ["video,type,type_idx,start,end,startFrame,endFrame"]
    names = {7: "BaseballPitch", 9: "BasketballDunk"}
    for video, (count, actions) in TINY_VIDEOS.items():
        frames = rng.integers(0, 60, size=(count, size, size, 3), dtype=np.uint8)
        for start, end, cls in actions:
            if cls == 7:
                frames[start:end] += 150
            else:
                frames[start:end, :, ::4] = 230
            anno.append(f"{video},{names[cls]},{cls},{start / 10:.1f},{end / 10:.1f},{start},{end}")
        np.save(data / f"{video}.npy", frames)
        info.append(f"{video},10.0,10.0,{float(count)},{count}")
    (root / "info.csv").write_text("\n".join(info) + "\n")
    (root / "anno.csv").write_text("\n".join(anno) + "\n")
    (root / "classes.txt").write_text("7 BaseballPitch\n9 BasketballDunk\n")
    return {"data": data, "info": root / "info.csv", "anno": root / "anno.csv", "classes": root / "classes.txt"}


def tiny_config(root: Path, overrides=(), **training):
    paths = write_tiny_dataset(root) if not (root / "info.csv").exists() else {
        "data": root / "npy", "info": root / "info.csv", "anno": root / "anno.csv", "classes": root / "classes.txt"}
    split = {"video_info_path": str(paths["info"]), "video_anno_path": str(paths["anno"]),
             "video_data_path": str(paths["data"]), "clip_length": 32, "clip_stride": 16, "crop_size": 32}
    data = {
        "dataset": {"name": "thumos14", "num_classes": 3, "class_index_path": str(paths["classes"]),
                    "training": split, "testing": {**split, "clip_stride": 16}},
        "model": {"in_channels": 3, "freeze_bn": True, "freeze_bn_affine": True},
        "training": {"batch_size": 1, "learning_rate": 1e-4, "weight_decay": 1e-3, "max_epoch": 2,
                     "random_seed": 7, "num_workers": 0, **training},
    }
    return build_config(data, overrides)
