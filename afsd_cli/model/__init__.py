"""The AFSD network, its I3D backbone and checkpoint I/O in the official layout.

``build_model(cfg)`` makes the model a config describes; ``AFSD(ModelSpec(...))`` makes one from
explicit numbers. See docs/model.md.
"""

from __future__ import annotations

from afsd_cli.config import Config
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


def model_spec_from_config(cfg: Config) -> ModelSpec:
    """The ModelSpec a config describes (head design of its dataset profile, classes, clip length,
    crop, channels)."""
    from afsd_cli.profile import kind_rules

    training = cfg.dataset.training
    if cfg.model.input == "features":
        # dataset.*.clip_length counts features on feature datasets (afsd_cli/profile.py)
        return features_spec(training.clip_length, cfg.model.feature_dim, cfg.dataset.num_classes)
    return ModelSpec(
        dataset=kind_rules(cfg.dataset.name).head,
        num_classes=cfg.dataset.num_classes,
        clip_length=training.clip_length,
        crop_size=training.crop_size,
        in_channels=cfg.model.in_channels,
    )


def build_model(cfg: Config, load_backbone: bool = False) -> AFSD:
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
        freeze_bn=model_cfg.freeze_bn,
        freeze_bn_affine=model_cfg.freeze_bn_affine,
        legacy_bmp_grad=model_cfg.legacy_bmp_grad,
    )
    model.backbone_report = None
    if load_backbone and model.spec.input == "features":
        raise ConfigError("model.backbone_model is set but model.input is features: a feature model has no "
                          "backbone (the I3D weights belong to `afsd extract --weights`)")
    if load_backbone:
        if not model_cfg.backbone_model:
            raise ConfigError("model.backbone_model is not set: training needs the I3D weights (rgb/flow_imagenet.pt)")
        model.backbone_report = model.backbone.load_pretrained(model_cfg.backbone_model)
    return model
