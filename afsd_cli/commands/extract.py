"""`afsd extract`: I3D features of videos or frame arrays (OUT/<video>.npy float32 [T', C] + features.json)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from afsd_cli.commands._common import console, handle_errors


def register(app: typer.Typer) -> None:
    @app.command("extract")
    @handle_errors
    def extract(
        inputs: List[Path] = typer.Argument(
            ..., help="Video files, folders of videos, or folders of RGB frame arrays <video>.npy (uint8 [T, H, W, 3])."),
        out_dir: Path = typer.Argument(..., help="OUT folder: OUT/<video>.npy (float32 [T', C]), features.json, manifest.json."),
        weights: Optional[Path] = typer.Option(
            None, "--weights", help="RGB I3D weights (pytorch-i3d rgb_imagenet.pt) or an AFSD checkpoint (its backbone)."),
        flow_weights: Optional[Path] = typer.Option(
            None, "--flow-weights", help="Flow I3D weights (flow_imagenet.pt) or an AFSD flow checkpoint."),
        modality: Optional[str] = typer.Option(
            None, "--modality", help="rgb, flow or both (RGB then flow, 2048 channels). Default: both with --flow-weights, else rgb."),
        flow_input: Optional[Path] = typer.Option(
            None, "--flow-input", help="Folder of flow arrays <video>.npy (uint8 [T, H, W, 2], from `afsd flow`); else flow is computed."),
        flow_method: str = typer.Option("tvl1", "--flow-method", help="How flow is computed without --flow-input: tvl1, opencv-tvl1, dis, farneback."),
        clip_frames: int = typer.Option(16, "--clip-frames", min=1, max=1024, help="Frames per clip."),
        stride: int = typer.Option(4, "--stride", min=1, max=4096, help="Frames between the starts of consecutive clips."),
        size: int = typer.Option(224, "--size", min=8, max=1024, help="Side of the centre crop (videos are resized to a short side of size*256/224 first)."),
        fps: str = typer.Option("native", "--fps", help="native (every frame of the video) or N (resample videos to N fps)."),
        device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto (CUDA when available)."),
        amp: str = typer.Option("off", "--amp", help="Mixed precision: off (float32), bf16 or fp16 (CUDA) autocast."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, max=4096, help="Clips per forward pass (default 8 on CPU, 32 on CUDA)."),
        jobs: int = typer.Option(1, "--jobs", "-j", min=1, max=256, help="Worker processes (CPU: they share the cores; 1 uses every core in one process)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Redo videos whose features already exist."),
        annotations: Optional[Path] = typer.Option(
            None, "--annotations", help="Annotation JSON of these videos: also write OUT/dataset.yaml, the config of AFSD on these features."),
        classes: Optional[Path] = typer.Option(None, "--classes", help="With --annotations: class list (default: the labels of the JSON, sorted)."),
    ) -> None:
        """Extract I3D clip features (Mixed_5c, averaged) for your own videos.

        Feature i is computed from frames [i*stride, i*stride + clip_frames) of the video at --fps; it stands for the time (i*stride + clip_frames/2)/fps. OUT/features.json records every setting, the weights' sha256 and the time mapping.

        Finished videos are skipped on a re-run; failures are listed at the end and make the exit code 1.
        """
        from afsd_cli.commands._batch_ui import batch_progress, print_summary
        from afsd_cli.features.extract import FEATURES_JSON, ExtractSettings, extract_features

        settings = ExtractSettings.from_options(
            modality=modality, weights=weights, flow_weights=flow_weights, flow_input=flow_input, fps=fps,
            flow_method=flow_method, clip_frames=clip_frames, stride=stride, size=size, device=device, amp=amp,
            batch_size=batch_size, jobs=jobs,
        )
        with batch_progress("extract", "clips") as ui:
            report = extract_features(inputs, out_dir, settings, overwrite=overwrite, on_start=ui.on_start,
                                      on_result=ui.on_result, on_clips=ui.on_clips)
        print_summary(report, f"extract ({settings.modality})", unit="clips")
        console.print(f"features.json: {report.out_dir / FEATURES_JSON}", highlight=False, markup=False)
        if annotations is not None:
            from afsd_cli.data.feature_dataset import write_feature_dataset_config

            config = write_feature_dataset_config(report.out_dir, annotations, classes)
            console.print(f"dataset config: {config} (train with: afsd train {config} --name NAME)",
                          highlight=False, markup=False)
        if not report.ok:
            raise typer.Exit(1)
