"""`afsd fuse`: RGB + flow two-stream detections, fused as the official
``thumos14/test.py --fusion`` and ``anet/test_fusion.py`` do."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from afsd_cli.commands._common import fail, handle_errors
from afsd_cli.commands._prediction import (
    DETECTIONS_NAME,
    AllOrNothingOption,
    AmpOption,
    BatchSizeOption,
    ClassifierOption,
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

if TYPE_CHECKING:
    from afsd_cli.config import Config


def register(app: typer.Typer) -> None:
    @app.command("fuse")
    @handle_errors
    def fuse(
        config: Path = typer.Argument(..., help="YAML config (the RGB one, e.g. configs/thumos14.yaml) or the RGB "
                                                "training run folder."),
        overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides."),
        rgb_checkpoint: Optional[Path] = typer.Option(None, "--rgb-checkpoint",
                                                      help="RGB weights or training run folder; default: "
                                                           "CONFIG's run folder, else testing.rgb_checkpoint_path."),
        flow_checkpoint: Optional[Path] = typer.Option(None, "--flow-checkpoint",
                                                       help="Flow weights or training run folder; default "
                                                            "testing.flow_checkpoint_path."),
        rgb_data: Optional[Path] = typer.Option(None, "--rgb-data",
                                                help="Folder of RGB arrays; default testing.rgb_data_path."),
        flow_data: Optional[Path] = typer.Option(None, "--flow-data",
                                                 help="Folder of flow arrays; default testing.flow_data_path."),
        output: OutputOption = None,
        name: NameOption = None,
        exist_ok: ExistOkOption = False,
        runs_dir: Optional[Path] = runs_dir_option("fuse"),
        video: Optional[List[Path]] = typer.Option(None, "--video",
                                                   help="Video file(s): frames decoded and flow computed in memory."),
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
        """Run the RGB and the flow network on the same windows and fuse them before decoding.

        THUMOS14: the raw outputs of both networks are averaged, then decoded (the official
        --fusion). ActivityNet: each stream's refined segments are combined by geometric mean and
        the score logits averaged (the official test_fusion.py).
        """
        from afsd_cli.config import load_config
        from afsd_cli.engine.planning import plan_prediction
        from afsd_cli.io import ensure_writable
        from afsd_cli.runs import output_destination, resolve_run

        if stream and not video:
            raise fail("--stream needs video files (--video)")
        config_path, run_rgb_checkpoint = resolve_run(config, rgb_checkpoint)
        overrides = list(overrides or []) + ([f"testing.flow_method={flow_method}"] if flow_method else [])
        cfg = load_config(config_path, overrides)
        rgb_ckpt, flow_ckpt = _checkpoints(cfg, run_rgb_checkpoint, flow_checkpoint)
        dirs = [] if video else _array_folders(cfg, rgb_data, flow_data)
        folder, out = output_destination("fuse", output, runs_dir, name, exist_ok)
        check_outputs(out, plot, "fuse", runs_dir, name, exist_ok)
        plan = plan_prediction(
            cfg, [rgb_ckpt, flow_ckpt], data_dirs=dirs, videos=video or [],
            classifier_path=classifier, batch_size=batch_size, device=device,
            amp=amp_mode(amp), limit=limit, deterministic=deterministic,
        )
        title = f"afsd fuse ({cfg.dataset.name}, RGB + flow, {plan.predictor.device})"
        if folder is None:
            run_plan(plan, out, plot, gt, title, jobs, all_or_nothing, stream)
            return
        data = {} if video else {"rgb_data_path": Path(dirs[0]), "flow_data_path": Path(dirs[1])}
        with folder as run_dir:
            ensure_writable(run_dir, kind="folder")  # the claimed folder itself, before the networks run
            run_plan(plan, run_dir / DETECTIONS_NAME, plot, gt, title, jobs, all_or_nothing, stream,
                     written=lambda: record_run(run_dir, cfg, plan, rgb_checkpoint_path=Path(rgb_ckpt),
                                                flow_checkpoint_path=Path(flow_ckpt), fusion=True,
                                                batch_size=plan.predictor.batch_size, **data))


def _checkpoints(cfg: Config, run_rgb_checkpoint: Optional[Path], flow_checkpoint: Optional[Path]) -> tuple[Path, Path]:
    """The RGB and flow weights: given (a run folder's checkpoint for RGB), else the config's;
    config values may name run folders too."""
    from afsd_cli.errors import ConfigError
    from afsd_cli.runs import resolve_checkpoint

    testing = cfg.testing
    rgb_ckpt = run_rgb_checkpoint or testing.rgb_checkpoint_path
    flow_ckpt = resolve_checkpoint(flow_checkpoint) or testing.flow_checkpoint_path
    if not rgb_ckpt or not flow_ckpt:
        which = "--rgb-checkpoint" if not rgb_ckpt else "--flow-checkpoint"
        raise ConfigError(f"fusion needs both checkpoints: pass {which} (or set testing.rgb_checkpoint_path "
                          "and testing.flow_checkpoint_path)")
    return resolve_checkpoint(rgb_ckpt), resolve_checkpoint(flow_ckpt)


def _array_folders(cfg: Config, rgb_data: Optional[Path], flow_data: Optional[Path]) -> list:
    """The RGB and flow array folders: given, else the config's (the RGB arrays default to the
    config's own data folder when it is an RGB config)."""
    from afsd_cli.errors import ConfigError

    testing = cfg.testing
    rgb_default = testing.rgb_data_path or (cfg.dataset.testing.video_data_path
                                             if cfg.model.in_channels == 3 or cfg.model.input == "features" else None)
    dirs = [rgb_data or rgb_default, flow_data or testing.flow_data_path]
    if not all(dirs):
        raise ConfigError("fusion needs both array folders: pass --rgb-data and --flow-data (or set "
                          "testing.rgb_data_path and testing.flow_data_path), or give --video files")
    return dirs
