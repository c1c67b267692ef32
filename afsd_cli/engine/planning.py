"""From a config to a :class:`PredictionPlan`: the predictor (models + settings) and the video jobs
``afsd predict`` / ``afsd fuse`` and validation during training run (engine/prediction.py runs it).

:func:`plan_prediction` reads as its steps: the streams' input widths, the video-level labels,
the jobs (video files, stored frame arrays or feature arrays) with the bad inputs found before
any network runs, the models (checkpoints are loaded last, after the cheaper checks), the predictor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from afsd_cli.config import Config
from afsd_cli.engine.classifier import Classifier, read_classifier
from afsd_cli.engine.inference import Predictor, resolve_device
from afsd_cli.engine.jobs import (
    VideoFileLoader,
    VideoJob,
    array_jobs,
    check_array_files,
    expand_video_paths,
    feature_jobs,
    video_file_jobs,
)
from afsd_cli.errors import CheckpointError, ConfigError, InputError
from afsd_cli.profile import DatasetProfile, resolve_profile

#: The input projection of a feature model: its width is the feature dimension the model takes.
FEATURE_PROJECTION_WEIGHT = "coarse_pyramid_detection.pyramids.0.0.conv1d.weight"

#: What a plan runs: a checkpoint file (loaded after the inputs are checked) or a model already
#: built and loaded (validation during training).
ModelSource = str | Path | torch.nn.Module


@dataclass
class PredictionPlan:
    """Everything ``afsd predict`` / ``afsd fuse`` run: the predictor, the jobs, what to write."""

    predictor: Predictor
    jobs: list[VideoJob]
    version: str
    notices: list[str]
    problems: list[str]  # bad inputs found before running (missing/malformed arrays)
    channels: list[int]
    profile: DatasetProfile | None = None  # its to_dict() goes into the output's metadata
    bad_videos: set[str] = field(default_factory=set)  # the jobs those problems concern

    def without_bad_videos(self) -> list[VideoJob]:
        """The jobs whose inputs passed the checks before running."""
        return [job for job in self.jobs if job.name not in self.bad_videos]

    def report_flow_progress(self, callback: Callable[[str, int, int], Any]) -> bool:
        """Have the on-the-fly flow of video files (flow models with ``--video``) call
        ``callback(video, pairs_done, pairs_in_video)`` as frame pairs finish; ``False`` when no
        job computes flow."""
        loaders = [job.load for job in self.jobs if isinstance(job.load, VideoFileLoader)]
        if 2 not in self.channels or not loaders:
            return False
        for loader in loaders:
            loader.on_flow_pairs = callback
        return True


@dataclass
class _Inputs:
    """The jobs of a plan and the bad inputs found before running (each names the video it stops)."""

    jobs: list[VideoJob]
    problems: list[str] = field(default_factory=list)
    bad_videos: set[str] = field(default_factory=set)

    def refuse(self, job: VideoJob, problems: list[str]) -> None:
        self.problems += problems
        if problems:
            self.bad_videos.add(job.name)

    def refuse_unclassified(self, classifier: Classifier | None) -> None:
        """With a video-level classifier, a video it does not know cannot be labelled."""
        if classifier is None:
            return
        for job in self.jobs:
            if classifier.top1(job.name) is None:
                self.refuse(job, [f"{classifier.source}: no classification for video {job.name!r}"])


def plan_prediction(
    cfg: Config,
    checkpoints: Sequence[ModelSource],
    data_dirs: Sequence[str | Path | None] = (),
    videos: Sequence[str | Path] = (),
    classifier_path: str | Path | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    amp: str | None = None,
    limit: int | None = None,
    deterministic: bool = False,
) -> PredictionPlan:
    """Build the predictor and the video jobs of a config.

    ``checkpoints``: one (the config's model, ``model.in_channels``) or two (RGB then flow, fused
    as the dataset's procedure says); each a weight file or a model already built and loaded.
    ``data_dirs`` (one per checkpoint) default to ``dataset.testing.video_data_path``
    (ActivityNet: ``video_mp4_path``, as officially). ``videos``: decode these files instead of
    reading stored arrays.
    """
    profile = resolve_profile(cfg)
    _require_checkpoints(checkpoints)
    device = resolve_device(device)
    if profile.input == "features" and videos:
        raise ConfigError("--video needs a frame model (model.input: frames); a feature model reads the "
                          "features of `afsd extract` (dataset.testing.video_data_path)")
    channels = stream_channels(cfg, profile, checkpoints)
    classifier, notices = video_classifier(cfg, profile, classifier_path)
    if videos:
        inputs = _Inputs(video_file_jobs(expand_video_paths(videos), profile.decode_options(), channels,
                                         flow_method=cfg.testing.flow_method, flow_device=device))
    else:
        inputs = stored_inputs(cfg, profile, data_dirs, channels, limit)
    inputs.refuse_unclassified(classifier)
    models = [load_model_for_stream(cfg, profile, source, width) for source, width in zip(checkpoints, channels)]
    predictor = build_predictor(cfg, profile, models, classifier, device, batch_size, amp, deterministic)
    return PredictionPlan(predictor, inputs.jobs, profile.output_version, notices, inputs.problems, channels,
                          profile, inputs.bad_videos)


def _require_checkpoints(checkpoints: Sequence[ModelSource]) -> None:
    for source in checkpoints:
        if not isinstance(source, torch.nn.Module) and not source:
            raise ConfigError("no checkpoint: pass --checkpoint (or set testing.checkpoint_path / "
                              "testing.rgb_checkpoint_path and testing.flow_checkpoint_path)")


def stream_channels(cfg: Config, profile: DatasetProfile, checkpoints: Sequence[ModelSource]) -> list[int]:
    """Each stream's input width: frame channels (RGB 3, flow 2), or a feature model's feature
    dimension (read from its checkpoint: one fused stream of 2048, or 1024 per I3D stream)."""
    if profile.input == "features":
        return [int(source.spec.feature_dim) if isinstance(source, torch.nn.Module) else checkpoint_feature_dim(source)
                for source in checkpoints]
    configured = [3, 2] if len(checkpoints) == 2 else [cfg.model.in_channels]
    return [int(source.spec.in_channels) if isinstance(source, torch.nn.Module) else width
            for source, width in zip(checkpoints, configured)]


def video_classifier(cfg: Config, profile: DatasetProfile, classifier_path: str | Path | None
                     ) -> tuple[Classifier | None, list[str]]:
    """The video-level classifier labelling class-agnostic proposals (ActivityNet), and the
    notice said when there is none; ``None`` for a dataset with class names."""
    if profile.class_names is not None:
        return None, []
    path = classifier_path or cfg.testing.classifier_path
    if path:
        return read_classifier(path), []
    return None, ["no video-level classifier (testing.classifier_path / --classifier): "
                  "writing class-agnostic proposals labelled 'action'"]


def stored_inputs(cfg: Config, profile: DatasetProfile, data_dirs: Sequence[str | Path | None],
                  channels: list[int], limit: int | None) -> _Inputs:
    """Jobs over the stored arrays of the held-out videos (frames, or features of ``afsd extract``),
    each frame array checked before any network runs."""
    features = profile.input == "features"
    infos = [] if features else held_out_video_infos(cfg, profile)
    if limit:
        infos = infos[:limit]
    dirs = array_folders(cfg, profile, data_dirs, len(channels))
    if features:
        return _Inputs(feature_jobs(cfg, profile, dirs, channels, limit))
    crop = cfg.dataset.testing.crop_size
    inputs = _Inputs(array_jobs(infos, dirs, channels, crop, strip_v_prefix=profile.rules.strip_v_prefix))
    expected = None if profile.sampling == "max_frames" else {i.name: i.sample_count for i in infos}
    for job in inputs.jobs:  # one job at a time: each problem names the video it stops
        inputs.refuse(job, check_array_files([job], dirs, channels, crop, expected_frames=expected))
    return inputs


def array_folders(cfg: Config, profile: DatasetProfile, data_dirs: Sequence[str | Path | None],
                  streams: int) -> list[str | Path]:
    """One array folder per stream: given, or ``dataset.testing.video_data_path`` (ActivityNet
    keeps its arrays in ``video_mp4_path``, as the official config does)."""
    testing = cfg.dataset.testing
    default_dir = testing.video_data_path or (testing.video_mp4_path if profile.rules.arrays_in_mp4_path else None)
    dirs = [d or default_dir for d in (list(data_dirs) or [None] * streams)]
    for d in dirs:
        if not d:
            raise ConfigError("dataset.testing.video_data_path is not set: it is the folder of the "
                              "<video>.npy arrays (or give video files with --video)")
        if not Path(d).is_dir():
            raise InputError("array folder not found", d)
    return dirs


def held_out_video_infos(cfg: Config, profile: DatasetProfile) -> list[Any]:
    """The held-out videos of the profile, in file order (VideoInfo rows of the video-info file;
    a custom dataset keeps those of its test subset in the annotation JSON)."""
    from afsd_cli.data.annotations import read_anet_video_info, read_json_annotations, read_video_info_csv

    testing = cfg.dataset.testing
    info_path = testing.video_info_path
    if not info_path:
        raise ConfigError("dataset.testing.video_info_path is not set: it lists the test videos "
                          "(or give video files with --video)")
    if profile.annotation_format == "anet_info_json":
        return list(read_anet_video_info(info_path, subset=profile.test_subset)[0].values())
    infos = read_video_info_csv(info_path)
    if profile.annotation_format != "json":
        return list(infos.values())
    anno_path = testing.video_anno_path or testing.gt_path
    if not anno_path:
        raise ConfigError("dataset.testing.video_anno_path is not set: the annotation JSON says which videos "
                          "are in the test subset")
    held_out = read_json_annotations(anno_path).in_subset(profile.test_subset)
    if not held_out:
        raise InputError(f"no video in subset {profile.test_subset!r}", anno_path)
    missing = [v.name for v in held_out if v.name not in infos]
    if missing:
        raise InputError(f"{len(missing)} video(s) of subset {profile.test_subset!r} are not in the video-info file "
                         f"(not prepared?): {', '.join(missing[:5])}", info_path)
    return [infos[v.name] for v in held_out]


# --------------------------------------------------------------------------- models


def load_model_for_stream(cfg: Config, profile: DatasetProfile, source: ModelSource, width: int) -> torch.nn.Module:
    """A stream's model: as given when already built, else the config's model with this stream's
    input width and the checkpoint's weights."""
    if isinstance(source, torch.nn.Module):
        return source
    if profile.input == "features":
        return load_model(cfg, source, feature_dim=width)
    return load_model(cfg, source, in_channels=width)


def load_model(cfg: Config, checkpoint: str | Path, in_channels: int | None = None,
               feature_dim: int | None = None) -> torch.nn.Module:
    """Build the config's model (optionally with another input channel count or feature width)
    and load weights."""
    from afsd_cli.model import build_model, load_checkpoint

    changes = {key: value for key, value in (("in_channels", in_channels), ("feature_dim", feature_dim))
               if value is not None and value != int(getattr(cfg.model, key))}
    if changes:
        from afsd_cli.config import build_config

        data = cfg.to_dict()
        data["model"].update(changes)
        cfg = build_config(data, source=cfg.source)
    model = build_model(cfg)
    load_checkpoint(model, checkpoint)  # CheckpointError names the mismatching keys
    return model.eval()


def checkpoint_feature_dim(path: str | Path) -> int:
    """Channels a feature model's checkpoint takes: the width of its input projection (one fused
    stream of 2048, or 1024 per I3D stream; ``afsd fuse`` runs two of them)."""
    from afsd_cli.model import read_state_dict

    weight = read_state_dict(path).get(FEATURE_PROJECTION_WEIGHT)
    if weight is None or weight.dim() != 3:
        raise CheckpointError("not a feature model's checkpoint (no input projection "
                              f"{FEATURE_PROJECTION_WEIGHT}): model.input is features", path)
    return int(weight.shape[1])


def build_predictor(cfg: Config, profile: DatasetProfile, models: list[torch.nn.Module],
                    classifier: Classifier | None, device: str, batch_size: int | None, amp: str | None,
                    deterministic: bool) -> Predictor:
    """The predictor of the config's testing settings (windows counted in network frames: 4 per
    feature on feature datasets) and the dataset's fusion and post-processing."""
    from afsd_cli.engine.postprocess import settings_from_config

    testing = cfg.dataset.testing
    scale = profile.network_frames_per_step
    return Predictor(
        models, settings_from_config(cfg, fusion=len(models) == 2), profile.class_names,
        clip_length=testing.clip_length * scale, clip_stride=testing.clip_stride * scale,
        crop_size=testing.crop_size, single_window=profile.single_window, fusion=profile.fusion,
        device=device, batch_size=batch_size or cfg.testing.batch_size,
        amp=amp, classifier=classifier, deterministic=deterministic,
    )
