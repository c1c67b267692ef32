"""Training engine on a tiny preset: loss falls, resume equals an uninterrupted run, checkpoints
load strictly, non-finite losses stop with a clear error, DDP (gloo, 2 processes) agrees."""

from __future__ import annotations

import csv
import math
import os
import socket
from pathlib import Path

import pytest
import torch

from afsd_cli.engine.trainer import TrainOptions, latest_state_epoch, new_run_dir, train
from afsd_cli.errors import TrainingError
from helpers.train_helpers import tiny_config


@pytest.fixture(autouse=True)
def one_thread():
    # the machine is shared: one intra-op thread is faster and makes timings predictable
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_dir_auto_increments(tmp_path):
    assert new_run_dir(tmp_path) == tmp_path / "exp" and not (tmp_path / "exp").exists()  # train creates it
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp3").mkdir()
    assert new_run_dir(tmp_path) == tmp_path / "exp4"  # after the highest: numbers follow the order of runs
    assert new_run_dir(tmp_path, "mine") == tmp_path / "mine"


def test_loss_falls_on_one_window(tmp_path):
    from afsd_cli.data.datasets import build_training_dataset

    cfg = tiny_config(tmp_path, ["training.learning_rate=3e-5", "training.ssl=0"], max_epoch=1)
    dataset = build_training_dataset(cfg)
    dataset.windows = dataset.windows[2:3] * 4  # video_b at offset 0: the same clip four times
    dataset.augment = False
    losses = []
    train(cfg, tmp_path / "run", options=TrainOptions(device="cpu"), dataset=dataset,
          callback=lambda e: losses.append(e["losses"]) if e["kind"] == "step" else None)
    totals = [step["total"] for step in losses]
    assert len(totals) == 4 and all(math.isfinite(v) for v in totals)
    assert totals[-1] < 0.8 * totals[0], totals
    assert sum(totals[-2:]) < sum(totals[:2]), totals
    assert losses[-1]["conf"] < losses[0]["conf"]


def test_resume_continues_exactly_and_checkpoints_load(tmp_path):
    from afsd_cli.model import build_model, load_checkpoint

    cfg = tiny_config(tmp_path, max_epoch=2)
    steps = TrainOptions(device="cpu", max_steps_per_epoch=1)
    straight = tmp_path / "straight"
    # two DataLoader workers here, none in the resumed run: samples must not depend on workers
    events = []
    train(cfg, straight, options=TrainOptions(device="cpu", max_steps_per_epoch=1, num_workers=2),
          callback=events.append)
    assert sum(e["kind"] == "step" for e in events) == 2
    assert any(e["kind"] == "step" and e["losses"]["trip"] > 0 for e in events)  # consistency term active

    split = tmp_path / "split"
    train(cfg, split, options=TrainOptions(device="cpu", max_steps_per_epoch=1, max_epoch=1))
    assert latest_state_epoch(split) == 1 and not (split / "checkpoint-2.ckpt").exists()
    train(cfg, split, resume=True, options=steps)

    a, b = _metrics(straight), _metrics(split)
    assert [r["epoch"] for r in b] == ["1", "2"]
    for name in ("total", "loc", "conf", "prop_loc", "prop_conf", "center", "start", "end", "trip"):
        assert a[1][name] == b[1][name], name  # exact, as text
    sa = torch.load(straight / "checkpoint-2.ckpt", weights_only=True)
    sb = torch.load(split / "checkpoint-2.ckpt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    # official layout: a bare state dict that loads strictly into a freshly built model
    model = build_model(cfg)
    load_checkpoint(model, straight / "checkpoint-2.ckpt", strict=True)
    assert next(iter(sa)).startswith("coarse_pyramid_detection.")
    state = torch.load(straight / "training" / "state-2.pt", weights_only=True)
    assert state["epoch"] == 2 and "optimizer" in state and isinstance(state["rng"]["torch"], torch.Tensor)
    for name in ("config.yaml", "env.json", "metrics.csv"):
        assert (straight / name).is_file()
    pytest.importorskip("matplotlib")
    assert (straight / "loss_curve.png").stat().st_size > 0


def test_non_finite_loss_names_step_and_term(tmp_path, monkeypatch):
    from afsd_cli.engine import trainer

    cfg = tiny_config(tmp_path, ["training.ssl=0"], max_epoch=1)
    original = trainer.compute_losses

    def poisoned(*args, **kwargs):
        terms = original(*args, **kwargs)
        terms["center"] = terms["center"] * float("nan")
        return terms

    monkeypatch.setattr(trainer, "compute_losses", poisoned)
    with pytest.raises(TrainingError, match=r"epoch 1, step 1: term\(s\) center"):
        train(cfg, tmp_path / "run", options=TrainOptions(device="cpu", max_steps_per_epoch=1))
    cfg = tiny_config(tmp_path, ["training.ssl=0", "training.skip_nonfinite=true"], max_epoch=1)
    skipped = []
    train(cfg, tmp_path / "run2", options=TrainOptions(device="cpu", max_steps_per_epoch=1),
          callback=lambda e: skipped.append(e) if e["kind"] == "skipped_step" else None)
    assert len(skipped) == 1 and _metrics(tmp_path / "run2")[0]["skipped_steps"] == "1"


class _CalibratingScaler:
    """Stands in for the CUDA-only fp16 GradScaler: like the real one, it drops the optimiser step
    and halves its scale while the (scaled) gradients overflow, here on the first two steps."""

    def __init__(self, device, enabled=True):
        self.current, self.calls = 65536.0, 0

    def is_enabled(self):
        return True

    def get_scale(self):
        return self.current

    def scale(self, loss):
        return loss

    def unscale_(self, optimizer):
        pass

    def step(self, optimizer):
        self.calls += 1
        if self.calls > 2:
            optimizer.step()

    def update(self):
        if self.calls <= 2:
            self.current /= 2

    def state_dict(self):
        return {"scale": self.current}

    def load_state_dict(self, state):
        self.current = state["scale"]


def test_gradient_scaler_skips_are_counted(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, ["training.ssl=0"], max_epoch=1)
    monkeypatch.setattr(torch.amp, "GradScaler", _CalibratingScaler)
    train(cfg, tmp_path / "run", options=TrainOptions(device="cpu", max_steps_per_epoch=4))
    row = _metrics(tmp_path / "run")[0]
    assert row["steps"] == "4" and row["amp_skipped_steps"] == "2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = tiny_config(Path(root), ["training.ssl=0.1"], max_epoch=1)
    steps = []
    result = train(cfg, lambda: new_run_dir(Path(root) / "runs"),
                   options=TrainOptions(device="cpu", max_steps_per_epoch=1),
                   callback=lambda e: steps.append(e["losses"]) if e["kind"] == "step" else None)
    state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
    torch.save({"steps": steps, "state": state}, Path(out) / f"rank{rank}.pt")


def test_ddp_two_processes_on_cpu(tmp_path):
    import torch.multiprocessing as mp

    tiny_config(tmp_path)  # write the data once
    out = tmp_path / "out"
    out.mkdir()
    # fork: the children reuse the imported torch instead of starting from scratch
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path), str(out)), nprocs=2, join=True,
                       start_method="fork")
    runs = list((tmp_path / "runs").iterdir())
    assert [r.name for r in runs] == ["exp"]  # one run folder, named and written by rank 0 only
    rows = _metrics(runs[0])
    assert rows[0]["steps"] == "1" and math.isfinite(float(rows[0]["total"]))
    ranks = [torch.load(out / f"rank{r}.pt") for r in range(2)]
    # the ranks saw different windows (different losses) but end with identical weights
    assert ranks[0]["steps"][0]["total"] != ranks[1]["steps"][0]["total"]
    saved = torch.load(runs[0] / "checkpoint-1.ckpt", weights_only=True)
    for key, value in saved.items():
        assert torch.equal(ranks[0]["state"][key], value) and torch.equal(ranks[1]["state"][key], value), key


def test_validation_keeps_the_best_checkpoint(tmp_path):
    from afsd_cli.engine.validation import validation_map
    from afsd_cli.model import build_model, load_checkpoint

    cfg = tiny_config(tmp_path, ["training.validate_every=1", "training.ssl=0", "training.keep_checkpoints=all"],
                      max_epoch=2)
    scripted = iter([0.3, 0.1])
    result = train(cfg, tmp_path / "run", options=TrainOptions(device="cpu", max_steps_per_epoch=1),
                   validate=lambda model, epoch: next(scripted))
    assert (result.best_epoch, result.best_map) == (1, 0.3)
    best = torch.load(tmp_path / "run" / "checkpoint-best.ckpt", weights_only=True)
    first = torch.load(tmp_path / "run" / "checkpoint-1.ckpt", weights_only=True)
    assert all(torch.equal(best[k], first[k]) for k in best)
    assert [row["val_map"] for row in _metrics(tmp_path / "run")] == ["0.3", "0.1"]

    # the default hook: afsd predict + afsd evaluate on the testing split (the tiny CSV as GT)
    cfg = tiny_config(tmp_path, [f"dataset.testing.gt_path={tmp_path / 'anno.csv'}"])
    model = load_checkpoint(build_model(cfg), tmp_path / "run" / "checkpoint-2.ckpt")
    value = validation_map(cfg, model, tmp_path / "val.json")
    assert 0.0 <= value <= 1.0 and (tmp_path / "val.json").is_file()


def test_validation_is_given_the_trained_network_itself(tmp_path):
    # the hook hands over the bare in-memory network (engine/hooks.py Validate), in eval mode,
    # with the weights of the epoch's checkpoint; training continues in train mode afterwards
    cfg = tiny_config(tmp_path, ["training.validate_every=1", "training.ssl=0"], max_epoch=1)
    seen = []

    def validate(model, epoch):
        seen.append((model, model.training, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        return 0.5

    result = train(cfg, tmp_path / "run", options=TrainOptions(device="cpu", max_steps_per_epoch=1), validate=validate)
    [(model, training, epoch, weights)] = seen
    assert model is result.model and not training and epoch == 1 and result.model.training
    saved = torch.load(tmp_path / "run" / "checkpoint-1.ckpt", weights_only=True)
    assert saved.keys() == weights.keys() and all(torch.equal(saved[k], weights[k]) for k in saved)


def test_validation_inputs_are_checked_before_the_first_epoch(tmp_path):
    from afsd_cli.errors import ConfigError, InputError

    steps = []
    options = TrainOptions(device="cpu", max_steps_per_epoch=1)
    cfg = tiny_config(tmp_path, ["training.validate_every=1", "training.ssl=0"], max_epoch=1)
    with pytest.raises(ConfigError, match="dataset.testing.gt_path"):
        train(cfg, tmp_path / "run", options=options, callback=steps.append)
    cfg = tiny_config(tmp_path, ["training.validate_every=1", "training.ssl=0",
                                 f"dataset.testing.gt_path={tmp_path / 'missing.json'}"], max_epoch=1)
    with pytest.raises(InputError, match="missing.json"):
        train(cfg, tmp_path / "run", options=options, callback=steps.append)
    # a held-out array that cannot be read: said before training, not as a skipped validation later
    held_out = tmp_path / "held_out"
    held_out.mkdir()
    (held_out / "video_a.npy").write_bytes((tmp_path / "npy" / "video_a.npy").read_bytes())
    (held_out / "video_b.npy").write_bytes((tmp_path / "npy" / "video_b.npy").read_bytes()[:1000])
    cfg = tiny_config(tmp_path, ["training.validate_every=1", "training.ssl=0",
                                 f"dataset.testing.gt_path={tmp_path / 'anno.csv'}",
                                 f"dataset.testing.video_data_path={held_out}"], max_epoch=1)
    with pytest.raises(InputError, match=r"validation: 1 bad input\(s\): .*video_b.npy: truncated"):
        train(cfg, tmp_path / "run", options=options, callback=steps.append)
    assert not [e for e in steps if e.get("kind") == "step"] and not (tmp_path / "run").exists()


def test_a_failed_validation_costs_its_epoch_mAP_not_the_run(tmp_path):
    from afsd_cli.errors import InputError

    cfg = tiny_config(tmp_path, ["training.validate_every=1", "training.ssl=0"], max_epoch=2)
    answers = iter([InputError("validation: 1 of 2 video(s) failed: clip2: broken"), 0.4])

    def validate(model, epoch):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    events = []
    result = train(cfg, tmp_path / "run", options=TrainOptions(device="cpu", max_steps_per_epoch=1),
                   callback=events.append, validate=validate)
    warnings = [e["message"] for e in events if e.get("kind") == "warning" and "validation" in e["message"]]
    assert warnings == ["validation of epoch 1 skipped: validation: 1 of 2 video(s) failed: clip2: broken"]
    assert [row["val_map"] for row in _metrics(tmp_path / "run")] == ["", "0.4"]
    assert (result.best_epoch, result.best_map) == (2, 0.4) and result.model.training


def test_cli_train_and_resume(tmp_path):
    from typer.testing import CliRunner

    from afsd_cli.cli import app

    cfg = tiny_config(tmp_path, max_epoch=1)
    config = tmp_path / "tiny.yaml"
    cfg.save(config)
    runner = CliRunner()
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(config), "training.ssl=0", "--runs-dir", str(runs),
                                 "--device", "cpu", "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    run = runs / "exp"
    assert "checkpoint-1.ckpt" in result.output and (run / "checkpoint-1.ckpt").is_file()
    # resume with one more epoch: the run's own config.yaml plus an override
    result = runner.invoke(app, ["train", "--resume", str(run), "training.max_epoch=2", "--device", "cpu",
                                 "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    assert [row["epoch"] for row in _metrics(run)] == ["1", "2"] and (run / "checkpoint-2.ckpt").is_file()
    # bad input: one line, non-zero exit, no traceback
    result = runner.invoke(app, ["train", str(config), "training.no_such_key=1", "--runs-dir", str(runs)])
    assert result.exit_code == 1 and "no_such_key" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "no such run folder" in result.output


def test_bf16_autocast_losses_are_float32_and_close(tmp_path):
    from afsd_cli.data.datasets import build_training_dataset, collate_training
    from afsd_cli.engine.trainer import compute_losses, loss_settings_from_config
    from afsd_cli.model import build_model

    cfg = tiny_config(tmp_path, ["training.ssl=0"], max_epoch=1)
    dataset = build_training_dataset(cfg)
    dataset.augment = False
    batch = collate_training([dataset[2]])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    settings = loss_settings_from_config(cfg, model.spec)
    device = torch.device("cpu")
    with torch.no_grad():
        full = compute_losses(model, model, batch, settings, device, "off")
        half = compute_losses(model, model, batch, settings, device, "bf16")
    for name, value in half.items():
        assert value.dtype == torch.float32, name
        assert math.isfinite(value.item()), name
        assert value.item() == pytest.approx(full[name].item(), rel=0.1, abs=0.05), name
