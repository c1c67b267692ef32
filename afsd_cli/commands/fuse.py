"""`afsd fuse`: RGB + flow two-stream detections, fused as the official
``thumos14/test.py --fusion`` and ``anet/test_fusion.py`` do."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from afsd_cli.commands._common import handle_errors
from afsd_cli.commands.predict import (
    AllOrNothingOption,
    AmpDtypeOption,
    AmpOption,
    BatchSizeOption,
    ClassifierOption,
    DeterministicOption,
    DeviceOption,
    GroundTruthOption,
    LimitOption,
    OutputOption,
    PlotOption,
    WorkersOption,
    check_outputs,
    output_path_from,
    run_plan,
)


def register(app: typer.Typer) -> None:
    @app.command("fuse")
    @handle_errors
    def fuse(
        config: Path = typer.Argument(..., help="YAML config (the RGB one, e.g. configs/thumos14.yaml) or the RGB "
                                                "training run folder."),
        overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides."),
        rgb_checkpoint: Optional[Path] = typer.Option(None, "--rgb-checkpoint",
                                                      help="RGB weights or run folder; default: CONFIG's run "
                                                           "folder, else testing.rgb_checkpoint_path."),
        flow_checkpoint: Optional[Path] = typer.Option(None, "--flow-checkpoint",
                                                       help="Flow weights or run folder; default "
                                                            "testing.flow_checkpoint_path."),
        rgb_data: Optional[Path] = typer.Option(None, "--rgb-data",
                                                help="Folder of RGB arrays; default testing.rgb_data_path."),
        flow_data: Optional[Path] = typer.Option(None, "--flow-data",
                                                 help="Folder of flow arrays; default testing.flow_data_path."),
        output: OutputOption = None,
        video: Optional[List[Path]] = typer.Option(None, "--video", "-v",
                                                   help="Video file(s): frames decoded and flow computed in memory."),
        classifier: ClassifierOption = None,
        batch_size: BatchSizeOption = None,
        device: DeviceOption = "auto",
        amp: AmpOption = False,
        amp_dtype: AmpDtypeOption = "bf16",
        plot: PlotOption = None,
        gt: GroundTruthOption = None,
        limit: LimitOption = None,
        workers: WorkersOption = 0,
        deterministic: DeterministicOption = False,
        all_or_nothing: AllOrNothingOption = False,
    ) -> None:
        """Run the RGB and the flow network on the same windows and fuse them before decoding.

        THUMOS14: the raw outputs of both networks are averaged, then decoded (the official
        --fusion). ActivityNet: each stream's refined segments are combined by geometric mean and
        the score logits averaged (the official test_fusion.py).
        """
        from afsd_cli.config import load_config
        from afsd_cli.engine.inference import plan_prediction
        from afsd_cli.errors import ConfigError
        from afsd_cli.runs import resolve_checkpoint, resolve_run

        config_path, run_rgb_checkpoint = resolve_run(config, rgb_checkpoint)
        cfg = load_config(config_path, overrides or [])
        testing = cfg.testing
        rgb_ckpt = run_rgb_checkpoint or testing.rgb_checkpoint_path
        flow_ckpt = resolve_checkpoint(flow_checkpoint) or testing.flow_checkpoint_path
        if not rgb_ckpt or not flow_ckpt:
            which = "--rgb-checkpoint" if not rgb_ckpt else "--flow-checkpoint"
            raise ConfigError(f"fusion needs both checkpoints: pass {which} (or set testing.rgb_checkpoint_path "
                              "and testing.flow_checkpoint_path)")
        # the RGB arrays default to the config's own data folder when it is an RGB config
        rgb_default = testing.rgb_data_path or (cfg.dataset.testing.video_data_path
                                                 if cfg.model.in_channels == 3 or cfg.model.input == "features" else None)
        dirs = [] if video else [rgb_data or rgb_default, flow_data or testing.flow_data_path]
        if not video and not all(dirs):
            raise ConfigError("fusion needs both array folders: pass --rgb-data and --flow-data (or set "
                              "testing.rgb_data_path and testing.flow_data_path), or give --video files")
        out = output_path_from(cfg, output)
        check_outputs(out, plot)
        plan = plan_prediction(
            cfg, [rgb_ckpt, flow_ckpt], data_dirs=dirs, videos=video or [],
            classifier_path=classifier, batch_size=batch_size, device=device,
            amp=amp_dtype if amp else None, limit=limit, deterministic=deterministic,
        )
        run_plan(plan, out, plot, gt, f"afsd fuse ({cfg.dataset.name}, RGB + flow, {plan.predictor.device})", workers,
                 all_or_nothing)
