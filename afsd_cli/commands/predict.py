"""`afsd predict`: detections of one model over the test set (stored arrays) or video files."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from afsd_cli.commands._common import fail, handle_errors
from afsd_cli.commands._prediction import (
    AllOrNothingOption,
    AmpOption,
    BatchSizeOption,
    ClassifierOption,
    DETECTIONS_NAME,
    DeterministicOption,
    DeviceOption,
    ExistOkOption,
    FlowMethodOption,
    GroundTruthOption,
    JobsOption,
    LimitOption,
    NameOption,
    OutputOption,
    PlotOption,
    StreamOption,
    amp_mode,
    check_outputs,
    record_run,
    run_plan,
    runs_dir_option,
)


def register(app: typer.Typer) -> None:
    @app.command("predict")
    @handle_errors
    def predict(
        config: Path = typer.Argument(..., help="YAML config (e.g. configs/thumos14.yaml) or a training run folder "
                                                "(its config.yaml and best, else last, checkpoint)."),
        overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides, e.g. testing.top_k=200."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint",
                                                  help="Weights (.ckpt, official or ours) or a training run folder "
                                                       "(its best, else last checkpoint); default: CONFIG's run "
                                                       "folder's, else testing.checkpoint_path."),
        output: OutputOption = None,
        name: NameOption = None,
        exist_ok: ExistOkOption = False,
        runs_dir: Optional[Path] = runs_dir_option("predict"),
        video: Optional[List[Path]] = typer.Option(None, "--video",
                                                   help="Video file(s) or folder(s) of videos to decode and run "
                                                        "directly (repeatable)."),
        flow_method: FlowMethodOption = None,
        classifier: ClassifierOption = None,
        batch_size: BatchSizeOption = None,
        device: DeviceOption = "auto",
        amp: AmpOption = "off",
        plot: PlotOption = None,
        gt: GroundTruthOption = None,
        limit: LimitOption = None,
        jobs: JobsOption = 0,
        deterministic: DeterministicOption = False,
        all_or_nothing: AllOrNothingOption = False,
        stream: StreamOption = False,
    ) -> None:
        """Detect actions with one model (RGB or flow) and write an ActivityNet-style JSON.

        CONFIG may be a training run folder: its config.yaml and its best (else last) checkpoint.

        Reads the held-out videos of the dataset (dataset.testing.video_info_path) and their arrays
        from dataset.testing.video_data_path, or decodes the files given with --video exactly as
        `afsd prepare` did for this dataset (fps, frame size); flow models compute optical flow on
        the fly. The output records the dataset profile, which `afsd evaluate` reads. Video files are
        streamed: decoding overlaps the network and memory does not grow with their length.
        Outputs go to a new run folder runs/predict/exp, exp2, ... (or exactly to --output).
        """
        from afsd_cli.config import load_config
        from afsd_cli.engine.planning import plan_prediction
        from afsd_cli.io import ensure_writable
        from afsd_cli.runs import output_destination, resolve_checkpoint, resolve_run

        if stream and not video:
            raise fail("--stream needs video files (--video)")
        config_path, run_checkpoint = resolve_run(config, checkpoint)
        overrides = list(overrides or []) + ([f"testing.flow_method={flow_method}"] if flow_method else [])
        cfg = load_config(config_path, overrides)
        folder, out = output_destination("predict", output, runs_dir, name, exist_ok)
        check_outputs(out, plot, "predict", runs_dir, name, exist_ok)
        weights = run_checkpoint or cfg.testing.checkpoint_path
        weights = weights and resolve_checkpoint(weights)  # testing.checkpoint_path may be a run folder too
        plan = plan_prediction(
            cfg, [weights], videos=video or [],
            classifier_path=classifier, batch_size=batch_size, device=device,
            amp=amp_mode(amp), limit=limit, deterministic=deterministic,
        )
        kind = "flow" if plan.channels == [2] else "RGB"
        title = f"afsd predict ({cfg.dataset.name}, {kind}, {plan.predictor.device})"
        if folder is None:
            run_plan(plan, out, plot, gt, title, jobs, all_or_nothing, stream)
            return
        with folder as run_dir:
            ensure_writable(run_dir, kind="folder")  # the claimed folder itself, before the network runs
            run_plan(plan, run_dir / DETECTIONS_NAME, plot, gt, title, jobs, all_or_nothing, stream,
                     written=lambda: record_run(run_dir, cfg, plan, checkpoint_path=Path(weights),
                                                batch_size=plan.predictor.batch_size))
