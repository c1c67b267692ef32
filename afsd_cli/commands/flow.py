"""`afsd flow`: RGB frame arrays → quantised optical-flow arrays (the official flow-stream input)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from afsd_cli.commands._common import handle_errors


def register(app: typer.Typer) -> None:
    @app.command("flow")
    @handle_errors
    def flow(
        rgb_dir: Path = typer.Argument(..., help="Folder of RGB uint8 [T, H, W, 3] .npy files (from `afsd prepare`)."),
        out_dir: Path = typer.Argument(..., help="Where the uint8 [T, H, W, 2] flow .npy files (same names) go."),
        method: str = typer.Option("tvl1", "--method", help="tvl1 (ours, PyTorch), opencv-tvl1, dis or farneback."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda (the tvl1 method)."),
        jobs: Optional[int] = typer.Option(
            None, "--jobs", "-j", min=0, help="Parallel workers (default: every core on cpu, 1 on cuda; 0 = every core)."),
        jpeg_quality: Optional[int] = typer.Option(
            None, "--jpeg-quality", min=0, max=100, help="Add the official JPEG round-trips at this quality (95 = OpenCV's default)."),
        preset: Optional[str] = typer.Option(
            None, "--preset", help="tvl1 only: opencv (OpenCV's defaults, the default), balanced or fast."),
        compile_: bool = typer.Option(
            False, "--compile", help="tvl1 only: torch.compile the solver (30-60 s once; ~2x faster on a GPU)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Redo files whose flow .npy already exists."),
        backend: str = typer.Option("loky", "--backend", help="joblib backend: loky (local processes), threading, dask, ray."),
    ) -> None:
        """Compute optical flow for every RGB .npy (uint8 [T, H, W, 2], same names).

        Flow of consecutive frames, clipped to ±20 px and quantised to uint8, the last flow repeated so T matches the RGB array.

        Finished files are skipped on a re-run; failures are listed at the end and make the exit code 1.
        """
        from afsd_cli.commands._batch_ui import batch_progress, print_summary
        from afsd_cli.data.pipeline import flow_files

        options: dict = {}
        if preset is not None:
            options["preset"] = preset
        if compile_:
            options["compile"] = True
        if jobs is None:
            jobs = 1 if device.startswith("cuda") else 0
        with batch_progress(f"flow ({method})", "frames") as ui:
            report = flow_files(
                rgb_dir, out_dir, method=method, device=device, jpeg_quality=jpeg_quality, method_options=options, jobs=jobs,
                backend=backend, overwrite=overwrite, on_start=ui.on_start, on_result=ui.on_result,
                on_frames=ui.on_frames,
            )
        print_summary(report, f"flow ({method}, {device})")
        if not report.ok:
            raise typer.Exit(1)
