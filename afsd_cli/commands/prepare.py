"""`afsd prepare`: videos → official RGB frame arrays (+ video-info file), or the synthetic dataset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from afsd_cli.commands._common import console, fail, handle_errors

if TYPE_CHECKING:
    from afsd_cli.data.custom_dataset import CustomPreparation


def register(app: typer.Typer) -> None:
    @app.command("prepare")
    @handle_errors
    def prepare(
        video_dir: Optional[Path] = typer.Argument(None, help="Folder of video files (mp4, avi, mkv, webm, mov, ...)."),
        out_dir: Optional[Path] = typer.Argument(None, help="Where <video>.npy, the video-info file and manifest.json go."),
        dataset: Optional[str] = typer.Option(
            None, "--dataset",
            help="thumos14: 10 fps; anet: at most 768 frames per video; custom: your own dataset at --fps, "
                 "writing OUT_DIR/dataset.yaml. Default: custom for an annotation JSON or a "
                 "video,start,end,label CSV, else thumos14."),
        annotations: Optional[Path] = typer.Option(
            None, "--annotations",
            help="Your dataset's annotation JSON ({\"database\": {video: {subset, annotations}}}) or "
                 "video,start,end,label[,subset] CSV; the THUMOS14 annotation CSV (only its videos, sorted); "
                 "or, with --dataset anet, the ActivityNet GT JSON."),
        info: Optional[Path] = typer.Option(
            None, "--info", help="Video-info file to write (default: OUT_DIR/video_info.csv for thumos14, .json for anet)."),
        class_names: Optional[Path] = typer.Option(
            None, "--class-names",
            help="custom: your class list (one name per line, or '<id> <name>' lines; default: the sorted labels). "
                 "ActivityNet: action_name.txt, label ids = line numbers (default: ids of the sorted GT labels)."),
        jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Parallel workers (0 = every core)."),
        backend: str = typer.Option("loky", "--backend", help="joblib backend: loky (local processes), threading, dask, ray."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Redo videos whose .npy already exists."),
        resize: str = typer.Option("pil-bicubic", "--resize", help="pil-bicubic (official, bit-identical to PIL), cv2-area or cv2-cubic (approximations)."),
        lenient_count: bool = typer.Option(
            False, "--lenient-count",
            help="Accept a decoded frame count that differs from the container's (upstream fails)."),
        max_frames: int = typer.Option(768, "--max-frames", min=1, help="anet: frames per video after resampling."),
        size: int = typer.Option(112, "--size", min=1, help="Side of the stored square frames (official 112; smaller for CPU presets)."),
        fps: float = typer.Option(10.0, "--fps", min=0.1, max=1000.0, help="custom: frames kept per second (official THUMOS14: 10)."),
        synthetic: Optional[Path] = typer.Option(
            None, "--synthetic", help="Instead of converting videos, render the bundled synthetic dataset into this folder."),
        videos: int = typer.Option(40, "--videos", min=2, help="--synthetic: number of videos."),
        classes: int = typer.Option(4, "--classes", min=1, help="--synthetic: number of action classes."),
        seed: int = typer.Option(0, "--seed", min=0, help="--synthetic: random seed."),
    ) -> None:
        """Decode videos into uint8 [T, 112, 112, 3] RGB .npy files, the official AFSD input.

        THUMOS14: frames kept by the official 10 fps accumulator, PIL bicubic 112x112, and OUT_DIR/video_info.csv (video,fps,sample_fps,count,sample_count). ActivityNet: each video resampled to at most 768 frames, and OUT_DIR/video_info.json.

        Your own dataset (--annotations anno.json): the annotated videos at --fps and --size, OUT_DIR/video_info.csv, classes.txt and dataset.yaml, a complete config for `afsd train OUT_DIR/dataset.yaml`.

        Finished videos are skipped on a re-run; failures are listed at the end and make the exit code 1.
        """
        if synthetic is not None:
            _render_synthetic(synthetic, videos, classes, seed)
            return
        if video_dir is None or out_dir is None:
            raise fail("VIDEO_DIR and OUT_DIR are required (or use --synthetic OUT_DIR)")

        from afsd_cli.commands._batch_ui import batch_progress, print_summary
        from afsd_cli.data.preparation import PrepareRequest, prepare_folder, preparation_kind

        request = PrepareRequest(
            video_dir=video_dir, out_dir=out_dir, dataset=dataset, annotations=annotations, info=info,
            class_names=class_names, jobs=jobs, backend=backend, overwrite=overwrite, resize=resize,
            strict_count=not lenient_count, max_frames=max_frames, size=size, fps=fps)
        kind = preparation_kind(request)
        with batch_progress("prepare", "frames") as ui:
            prepared = prepare_folder(request, kind, on_start=ui.on_start, on_result=ui.on_result,
                                      on_frames=ui.on_frames)
        if prepared.dataset is None:
            print_summary(prepared.report, "prepare")
        else:
            _print_custom_dataset(prepared.dataset)
        if not prepared.report.ok:
            raise typer.Exit(1)


def _print_custom_dataset(prepared: CustomPreparation) -> None:
    """The summary, the dataset's notes (its report's among them), its classes and subsets, what next."""
    from rich.markup import escape

    from afsd_cli.commands._batch_ui import print_summary
    from afsd_cli.commands._common import err_console

    print_summary(prepared.report, "prepare", notes=False)  # printed below with the dataset's own notes
    for note in prepared.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    console.print(f"dataset: {len(prepared.class_names)} classes ({', '.join(prepared.class_names)}), "
                  f"training subset {prepared.train_subset!r}, test subset {prepared.test_subset!r}",
                  highlight=False, markup=False, soft_wrap=True)
    console.print(f"config written to {prepared.config_path}; next: afsd train {prepared.config_path} --name NAME",
                  highlight=False, markup=False, soft_wrap=True)


def _render_synthetic(out_dir: Path, videos: int, classes: int, seed: int) -> None:
    try:
        from afsd_cli.data.synthetic import render_dataset
    except ImportError as exc:
        raise fail(f"the synthetic dataset generator is not available: {exc}") from None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from afsd_cli.commands._common import err_console
    from afsd_cli.io import ensure_writable

    ensure_writable(out_dir, kind="folder")  # before rendering any video

    with Progress(TextColumn("[bold]synthetic"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[name]}"),
                  TimeElapsedColumn(), console=err_console) as progress:
        task = progress.add_task("synthetic", total=videos, name="")

        def advance(done: int, total: int, name: str = "") -> None:
            progress.update(task, completed=done, total=total, name=name)

        summary = render_dataset(out_dir, num_videos=videos, num_classes=classes, seed=seed, progress=advance)
    console.print(f"synthetic dataset written to {out_dir}", highlight=False)
    for key, value in (summary or {}).get("paths", {}).items():
        console.print(f"  {key}: {value}", highlight=False)
