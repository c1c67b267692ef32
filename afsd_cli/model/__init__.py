"""The AFSD network, its I3D backbone and checkpoint I/O in the official layout.

``build_model(cfg)`` makes the model a config describes; ``AFSD(ModelSpec(...))`` makes one from
explicit numbers. See docs/model.md.
"""

from __future__ import annotations

from afsd_cli.model.afsd import (
    AFSD,
    HEAD_SPECS,
    AFSDOutput,
    ConsistencyFeatures,
    HeadSpec,
    ModelSpec,
    anet_spec,
    FRAMES_PER_FEATURE,
    boundary_regions,
    features_spec,
    thumos14_spec,
)
from afsd_cli.model.checkpoints import load_checkpoint, read_state_dict, save_checkpoint
from afsd_cli.model.i3d import BackboneLoadReport

__all__ = [
    "AFSD",
    "HEAD_SPECS",
    "AFSDOutput",
    "BackboneLoadReport",
    "ConsistencyFeatures",
    "HeadSpec",
    "ModelSpec",
    "anet_spec",
    "FRAMES_PER_FEATURE",
    "boundary_regions",
    "build_model",
    "features_spec",
    "load_checkpoint",
    "model_spec_from_config",
    "read_state_dict",
    "save_checkpoint",
    "thumos14_spec",
]


def model_spec_from_config(cfg) -> ModelSpec:
    """The ModelSpec a config describes (head design of its dataset profile, classes, clip length,
    crop, channels)."""
    from afsd_cli.profile import kind_rules

    training = cfg.dataset.training
    if str(getattr(cfg.model, "input", "frames") or "frames") == "features":
        # dataset.*.clip_length counts features on feature datasets (afsd_cli/profile.py)
        return features_spec(int(training.clip_length), int(cfg.model.feature_dim), int(cfg.dataset.num_classes))
    return ModelSpec(
        dataset=kind_rules(str(cfg.dataset.name)).head,
        num_classes=int(cfg.dataset.num_classes),
        clip_length=int(training.clip_length),
        crop_size=int(getattr(training, "crop_size", 96)),
        in_channels=int(getattr(cfg.model, "in_channels", 3)),
    )


def build_model(cfg, load_backbone: bool = False) -> AFSD:
    """Build the AFSD model of ``cfg``; with ``load_backbone`` also load ``cfg.model.backbone_model``.

    The ActivityNet model always predicts 2 classes (background, action), whatever
    ``dataset.num_classes`` says (the official anet.yaml says 201 and the code ignores it).
    Returns the model in train mode, as ``nn.Module`` does; the I3D load report, when loaded, is
    kept as ``model.backbone_report``.
    """
    from afsd_cli.errors import ConfigError

    model_cfg = cfg.model
    model = AFSD(
        model_spec_from_config(cfg),
        freeze_bn=bool(getattr(model_cfg, "freeze_bn", True)),
        freeze_bn_affine=bool(getattr(model_cfg, "freeze_bn_affine", True)),
        legacy_bmp_grad=bool(getattr(model_cfg, "legacy_bmp_grad", False)),
    )
    model.backbone_report = None
    if load_backbone and model.spec.input == "features":
        raise ConfigError("model.backbone_model is set but model.input is features: a feature model has no "
                          "backbone (the I3D weights belong to `afsd extract --weights`)")
    if load_backbone:
        path = getattr(model_cfg, "backbone_model", None)
        if not path:
            raise ConfigError("model.backbone_model is not set: training needs the I3D weights (rgb/flow_imagenet.pt)")
        model.backbone_report = model.backbone.load_pretrained(path)
    return model
