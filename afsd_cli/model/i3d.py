"""Inception-I3D backbone up to ``Mixed_5c`` (official ``InceptionI3d`` in ``AFSD/common/i3d_backbone.py``).

Endpoint names, branch names (``b0``, ``b1a``, ``b1b``, ``b2a``, ``b2b``, ``b3a``, ``b3b``) and
registration order are those of the official model, so ``state_dict()`` keys and their order
match the released checkpoints and the public pytorch-i3d weight files
(``rgb_imagenet.pt`` / ``flow_imagenet.pt``).

Spatial sizes: every stride-2 stage uses SAME padding, so a crop of ``s`` pixels gives
``ceil(s/16)`` at ``Mixed_4f`` and ``ceil(s/32)`` at ``Mixed_5c`` (96 → 6 and 3); a clip of
``T`` frames gives ``ceil(T/4)`` and ``ceil(T/8)`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from afsd_cli.errors import CheckpointError
from afsd_cli.model.checkpoints import load_weights, read_state_dict, refuse_non_finite, strip_prefix
from afsd_cli.model.layers import MaxPool3dSame, Unit3D

# Inception block: input channels and (b0, b1a, b1b, b2a, b2b, b3b) output channels.
INCEPTION_BLOCKS: dict[str, tuple[int, tuple[int, int, int, int, int, int]]] = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}

ENDPOINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
)


def endpoint_channels(endpoint: str) -> int:
    """Output channels of an Inception endpoint (e.g. Mixed_4f → 832, Mixed_5c → 1024)."""
    _, (b0, _, b1, _, b2, b3) = INCEPTION_BLOCKS[endpoint]
    return b0 + b1 + b2 + b3


class InceptionBlock(nn.Module):
    """Four parallel branches (1³; 1³→3³; 1³→3³; 3³ max-pool→1³) concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        self.b0 = Unit3D(in_channels, b0)
        self.b1a = Unit3D(in_channels, b1a)
        self.b1b = Unit3D(b1a, b1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, b2a)
        self.b2b = Unit3D(b2a, b2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, b3b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )


class InceptionI3d(nn.Module):
    """The I3D feature extractor; children are the endpoints in network order."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        for name in ENDPOINTS:
            self.add_module(name, self._make_endpoint(name, in_channels))

    @staticmethod
    def _make_endpoint(name: str, in_channels: int) -> nn.Module:
        if name in INCEPTION_BLOCKS:
            block_in, widths = INCEPTION_BLOCKS[name]
            return InceptionBlock(block_in, widths)
        stems = {
            "Conv3d_1a_7x7": lambda: Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2)),
            "MaxPool3d_2a_3x3": lambda: MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": lambda: Unit3D(64, 64),
            "Conv3d_2c_3x3": lambda: Unit3D(64, 192, (3, 3, 3)),
            "MaxPool3d_3a_3x3": lambda: MaxPool3dSame((1, 3, 3), (1, 2, 2)),
            "MaxPool3d_4a_3x3": lambda: MaxPool3dSame((3, 3, 3), (2, 2, 2)),
            "MaxPool3d_5a_2x2": lambda: MaxPool3dSame((2, 2, 2), (2, 2, 2)),
        }
        return stems[name]()

    def forward(self, x: torch.Tensor, endpoints=("Mixed_5c",)) -> dict[str, torch.Tensor]:
        """Run up to the last requested endpoint; return only the requested feature maps."""
        wanted = set(endpoints)
        last = max(ENDPOINTS.index(name) for name in wanted)
        features: dict[str, torch.Tensor] = {}
        for name in ENDPOINTS[: last + 1]:
            x = self._modules[name](x)
            if name in wanted:
                features[name] = x
        return features


_AFSD_PREFIX = "backbone._model."


@dataclass
class BackboneLoadReport:
    """What loading an I3D weight file matched: use it to spot a wrong file at a glance."""

    path: str
    matched: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.path}: {self.matched} tensors loaded"
        if self.missing:
            text += f", {len(self.missing)} missing (e.g. {', '.join(self.missing[:3])})"
        if self.unexpected:
            text += f", {len(self.unexpected)} ignored (e.g. {', '.join(self.unexpected[:3])})"
        return text


class I3DBackbone(nn.Module):
    """Holds the I3D as ``_model`` (checkpoint key prefix ``backbone._model.``) and freezes BN.

    With ``freeze_bn`` every BatchNorm3d stays in eval mode when the model is put in train mode
    (running statistics are used, never updated); ``freeze_bn_affine`` also stops gradients to
    the BN weight and bias. Convolutions are always trained.
    """

    def __init__(self, in_channels: int = 3, freeze_bn: bool = True, freeze_bn_affine: bool = True):
        super().__init__()
        self._model = InceptionI3d(in_channels)
        self.freeze_bn = freeze_bn
        self.freeze_bn_affine = freeze_bn_affine

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self._model.modules():
                if isinstance(module, nn.BatchNorm3d):
                    module.eval()
                    if self.freeze_bn_affine:
                        module.weight.requires_grad_(False)
                        module.bias.requires_grad_(False)
        return self

    def forward(self, x: torch.Tensor, endpoints=("Mixed_5c",)) -> dict[str, torch.Tensor]:
        return self._model(x, endpoints)

    def load_pretrained(self, path: str | Path) -> BackboneLoadReport:
        """Load pytorch-i3d weights (``Conv3d_1a_7x7.conv3d.weight`` …) into ``_model``.

        As the official ``train.py`` does, this is ``load_state_dict(strict=False)``: extra keys
        (``logits.*``) are ignored and absent ones keep their values; both are listed in the
        report. The public ``rgb_imagenet.pt``/``flow_imagenet.pt`` were saved by PyTorch
        0.3/0.4, without ``num_batches_tracked``: PyTorch fills those counters itself. A whole
        AFSD checkpoint is accepted too (its ``backbone._model.`` part is used). A file that
        matches nothing, holds non-finite values, or whose tensors have other shapes (an RGB
        file for a flow model) raises CheckpointError.
        """
        state = strip_prefix(read_state_dict(path), _AFSD_PREFIX)  # a whole AFSD checkpoint works too
        expected = self._model.state_dict()
        matched = [key for key in state if key in expected]
        if not matched:
            raise CheckpointError(
                "no tensor matches the I3D backbone (expected keys like 'Conv3d_1a_7x7.conv3d.weight', "
                f"found e.g. {', '.join(list(state)[:3]) or 'nothing'})",
                path,
            )
        refuse_non_finite({key: state[key] for key in matched}, path)
        result = load_weights(self._model, state, path, strict=False,
                              what="I3D weights do not fit this backbone (wrong in_channels / modality?)")
        return BackboneLoadReport(
            path=str(path),
            matched=len(matched),
            missing=list(result.missing_keys),
            unexpected=list(result.unexpected_keys),
        )
