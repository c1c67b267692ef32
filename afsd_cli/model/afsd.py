"""The AFSD network: I3D backbone → feature pyramid → anchor-free coarse heads → proposal
branches with boundary max pooling → refined heads (official ``BDNet`` in ``AFSD/thumos14/BDNet.py``
and ``AFSD/anet/BDNet.py``).

One implementation serves every dataset. What differs between THUMOS14 and ActivityNet lives in
one table, :data:`HEAD_SPECS`; the sizes (clip length, crop, classes, input channels) are plain
numbers in :class:`ModelSpec`, so a small CPU preset is the same code with other numbers.

Read top to bottom: specs → proposal branch → pyramid head (``CoarsePyramid``) → ``AFSD``.
Module and attribute names follow the official model because the released checkpoints are keyed
by them (``coarse_pyramid_detection.*``, ``backbone._model.*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from afsd_cli.errors import ConfigError, InputError
from afsd_cli.features.timeline import FRAMES_PER_FEATURE
from afsd_cli.model.i3d import I3DBackbone, endpoint_channels
from afsd_cli.model.layers import ScaleExp, Unit1D, Unit3D, norm_relu
from afsd_cli.ops import boundary_max_pool

CONV_CHANNELS = 512  # width of every pyramid level and head tower
MAX_LEVELS = 6


# --------------------------------------------------------------------------------------------
# What differs between datasets, in one place
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadSpec:
    """Per-dataset head design (``CoarsePyramid`` of ``AFSD/thumos14/BDNet.py`` vs ``AFSD/anet/BDNet.py``).

    pyramid_sources: backbone endpoints feeding the pyramid. With two, level 0 comes from the
        first, level 1 from the second and is added (upsampled ×2) onto level 0; with one,
        level 0 comes from it and every further level is a stride-2 conv.
    loc_scaled_by_stride: multiply level i's distances by ``4 · 2**i`` (ANet, as ``AFSD/anet/BDNet.py``: the
        factor is 4 at level 0 although its true stride is 8; the released weights depend on it).
    priors_with_level: priors carry a second column with the level index.
    normal_head_init: re-initialise the tower/head/proposal Conv1d layers N(0, 0.01).
    fixed_num_classes: the model's class count regardless of the config (ANet: 2 = bg + action).
    """

    pyramid_sources: tuple[str, ...]
    loc_scaled_by_stride: bool
    priors_with_level: bool
    normal_head_init: bool
    fixed_num_classes: int | None = None

    @property
    def level0_stride(self) -> int:
        """Frames per level-0 step: 4 when level 0 reads Mixed_4f, 8 when it reads Mixed_5c."""
        return _ENDPOINT_STRIDES[self.pyramid_sources[0]][0]


#: The pyramid input of a feature model (the HEAD_SPECS entry and its endpoint name).
FEATURE_SOURCE = "features"

HEAD_SPECS: dict[str, HeadSpec] = {
    "thumos14": HeadSpec(
        pyramid_sources=("Mixed_4f", "Mixed_5c"),
        loc_scaled_by_stride=False,
        priors_with_level=False,
        normal_head_init=False,
    ),
    "anet": HeadSpec(
        pyramid_sources=("Mixed_5c",),
        loc_scaled_by_stride=True,
        priors_with_level=True,
        normal_head_init=True,
        fixed_num_classes=2,
    ),
    # Pre-extracted features: level 0 is a 1×1 projection of the [B, C, T'] sequence, every further
    # level a stride-2 conv, distances unscaled (OpenTAD's feature-based AFSD: AFSDNeck with e2e=False,
    # configs/afsd/thumos_i3d.py fpn_strides all 1).
    "features": HeadSpec(
        pyramid_sources=(FEATURE_SOURCE,),
        loc_scaled_by_stride=False,
        priors_with_level=False,
        normal_head_init=False,
    ),
}

# (temporal, spatial) downsampling of the backbone at each endpoint the pyramid can read
_ENDPOINT_STRIDES = {"Mixed_4f": (4, 16), "Mixed_5c": (8, 32), FEATURE_SOURCE: (FRAMES_PER_FEATURE, 1)}
INPUT_KINDS = ("frames", "features")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the network's shape depends on.

    ``clip_length`` must be a multiple of 8 (so ``Mixed_5c`` has exactly ``clip_length / 8``
    steps). The pyramid has up to 6 levels of lengths ``t0, t0/2, …`` with
    ``t0 = clip_length / 4`` (level 0 from Mixed_4f) or ``/ 8`` (from Mixed_5c); it keeps 6 levels when ``t0`` is divisible by 32 (THUMOS
    256 → 64…2, ANet 768 → 96…3) and otherwise as many as halve exactly
    (e.g. THUMOS 64 frames → 16, 8, 4, 2, 1: 5 levels).
    """

    dataset: str = "thumos14"
    num_classes: int = 21
    clip_length: int = 256
    crop_size: int = 96
    in_channels: int = 3
    input: str = "frames"  # "features": [B, feature_dim, clip_length / 4] instead of frames
    feature_dim: int = 2048

    def __post_init__(self):
        if self.input not in INPUT_KINDS:
            raise ConfigError(f"unknown model input {self.input!r} (expected one of {', '.join(INPUT_KINDS)})")
        if self.input == "features" and (self.dataset != FEATURE_SOURCE or self.feature_dim <= 0):
            raise ConfigError(f"a feature model uses the {FEATURE_SOURCE!r} head and a positive feature_dim, got "
                              f"{self.dataset!r} and {self.feature_dim}")
        if self.dataset not in HEAD_SPECS:
            raise ConfigError(f"unknown dataset {self.dataset!r} for the model (expected one of {sorted(HEAD_SPECS)})")
        if self.clip_length <= 0 or self.clip_length % 8:
            raise ConfigError(f"clip_length must be a positive multiple of 8, got {self.clip_length}")
        if self.crop_size <= 0 or self.num_classes < 2 or self.in_channels <= 0:
            raise ConfigError(
                f"invalid model sizes: crop_size={self.crop_size}, num_classes={self.num_classes}, "
                f"in_channels={self.in_channels}"
            )
        if self.num_levels < len(self.head.pyramid_sources):
            raise ConfigError(f"clip_length {self.clip_length} is too short for the {self.dataset} pyramid")

    @property
    def head(self) -> HeadSpec:
        return HEAD_SPECS[self.dataset]

    @property
    def feature_steps(self) -> int:
        """Features per window of a feature model (``clip_length`` counts network frames)."""
        return self.clip_length // FRAMES_PER_FEATURE

    @property
    def model_classes(self) -> int:
        """Classes the heads predict (including background)."""
        return self.head.fixed_num_classes or self.num_classes

    @property
    def feat_t(self) -> int:
        """Length of pyramid level 0."""
        return self.clip_length // self.head.level0_stride

    @property
    def num_levels(self) -> int:
        halvings = 0
        while halvings < MAX_LEVELS - 1 and self.feat_t % (2 ** (halvings + 1)) == 0:
            halvings += 1
        return halvings + 1

    @property
    def level_lengths(self) -> tuple[int, ...]:
        return tuple(self.feat_t // 2**i for i in range(self.num_levels))

    @property
    def fpn_strides(self) -> tuple[float, ...]:
        """Factor applied to level i's predicted distances (1 unless ``loc_scaled_by_stride``)."""
        if self.head.loc_scaled_by_stride:
            return tuple(float(4 * 2**i) for i in range(self.num_levels))
        return (1.0,) * self.num_levels

    def feature_size(self, endpoint: str) -> int:
        """Spatial size of a backbone endpoint for this crop (96 px → 6 at Mixed_4f, 3 at Mixed_5c)."""
        return math.ceil(self.crop_size / _ENDPOINT_STRIDES[endpoint][1])


def thumos14_spec(**sizes) -> ModelSpec:
    return ModelSpec(dataset="thumos14", **{"num_classes": 21, **sizes})


def anet_spec(**sizes) -> ModelSpec:
    return ModelSpec(dataset="anet", **{"num_classes": 2, "clip_length": 768, **sizes})


def features_spec(window: int, feature_dim: int = 2048, num_classes: int = 21) -> ModelSpec:
    """A model on ``window`` pre-extracted features of ``feature_dim`` channels."""
    return ModelSpec(dataset=FEATURE_SOURCE, num_classes=num_classes, clip_length=window * FRAMES_PER_FEATURE,
                     input="features", feature_dim=feature_dim)


class AFSDOutput(NamedTuple):
    """Raw network outputs, in the order of the official tuple (M = total pyramid locations).

    loc [B,M,2]: distances (start, end) in frames of the clip; conf [B,M,C] logits; prop_loc
    [B,M,2] refinements; prop_conf [B,M,C]; center [B,M,1] logits; priors [1,M,1] (ANet
    [1,M,2] with the level index) normalised centres; start/end [B,T,256] frame-level
    boundary features; *_prop [B,t0,512] level-0 boundary-sensitive proposal features.
    """

    loc: torch.Tensor
    conf: torch.Tensor
    prop_loc: torch.Tensor
    prop_conf: torch.Tensor
    center: torch.Tensor
    priors: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor
    start_loc_prop: torch.Tensor
    end_loc_prop: torch.Tensor
    start_conf_prop: torch.Tensor
    end_conf_prop: torch.Tensor


class ConsistencyFeatures(NamedTuple):
    """The three maps the boundary-consistency loss pools (official ``BDNet.forward`` with ``ssl``,
    ``AFSD/thumos14/BDNet.py``)."""

    frame: torch.Tensor  # F_frame [B,512,T]
    loc_boundary: torch.Tensor  # level-0 lr_conv of the loc proposal branch [B,1024,t0]
    conf_boundary: torch.Tensor  # level-0 lr_conv of the conf proposal branch [B,1024,t0]


# --------------------------------------------------------------------------------------------
# Segments fed to boundary max pooling, computed without gradient (official CoarsePyramid.forward)
# --------------------------------------------------------------------------------------------
def _regions(start: torch.Tensor, end: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """[start − out, start + in, end − in, end + out], in = max(length/4, 1), out = max(length/10, 1).

    The start region reaches a tenth of the length outside and a quarter inside the start; the
    end region mirrors it. Rounded half-to-even like the official code.
    """
    inner = torch.clamp(length / 4.0, min=1.0)
    outer = torch.clamp(length / 10.0, min=1.0)
    return torch.cat(
        [torch.round(start - outer), torch.round(start + inner), torch.round(end - inner), torch.round(end + outer)],
        dim=-1,
    )


def boundary_regions(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Start/end pooling regions of segments ``[start, end]`` in frames (inclusive length)."""
    return _regions(start, end, end - start + 1.0)


def level_segments(loc: torch.Tensor, priors: torch.Tensor, level_length: int, frame_num: int) -> torch.Tensor:
    """Regions on a pyramid level's own time axis (for its lr_conv features) [B,t,4].

    Distances are rescaled to level steps and measured from the location's index; the length
    is ``left + right`` here (no +1, unlike the frame axis).
    """
    scaled = loc / frame_num * level_length
    left, right = scaled[:, :, :1], scaled[:, :, 1:]
    index = torch.round(priors * level_length - 0.5)
    return _regions(index - left, index + right, left + right)


def frame_segments(loc: torch.Tensor, priors: torch.Tensor, frame_num: int) -> torch.Tensor:
    """Regions on the frame axis (for the frame-level feature) [B,t,4]."""
    centre = priors * frame_num
    return boundary_regions(centre - loc[:, :, :1], centre + loc[:, :, 1:])


# --------------------------------------------------------------------------------------------
# Proposal branch (official ProposalBranch in AFSD/thumos14/BDNet.py)
# --------------------------------------------------------------------------------------------
class ProposalBranch(nn.Module):
    """Refines each location with boundary features pooled from its own coarse segment."""

    def __init__(self, channels: int, proposal_channels: int, legacy_bmp_grad: bool = False):
        super().__init__()
        self.cur_point_conv = norm_relu(Unit1D(channels, proposal_channels), proposal_channels)
        self.lr_conv = norm_relu(Unit1D(channels, proposal_channels * 2), proposal_channels * 2)
        self.roi_conv = norm_relu(Unit1D(proposal_channels, proposal_channels), proposal_channels)
        self.proposal_conv = norm_relu(Unit1D(proposal_channels * 4, channels), channels)
        self.legacy_bmp_grad = legacy_bmp_grad

    def forward(self, feature, frame_feature, segments, frame_segments_):
        """Return (refined feature [B,C,t], boundary-sensitive lr_conv feature [B,2P,t])."""
        centre_feature = self.cur_point_conv(feature)
        boundary_feature = self.lr_conv(feature)
        pooled_level = boundary_max_pool(boundary_feature, segments, legacy_grad=self.legacy_bmp_grad)
        pooled_frame = boundary_max_pool(frame_feature, frame_segments_, legacy_grad=self.legacy_bmp_grad)
        pooled_frame = self.roi_conv(pooled_frame)
        fused = torch.cat([pooled_frame, pooled_level, centre_feature], dim=1)
        return self.proposal_conv(fused), boundary_feature


# --------------------------------------------------------------------------------------------
# Pyramid and heads (``coarse_pyramid_detection``)
# --------------------------------------------------------------------------------------------
class CoarseLevel(NamedTuple):
    """One pyramid level after the coarse head (t = the level's length)."""

    loc_feature: torch.Tensor  # loc tower output [B,512,t]
    conf_feature: torch.Tensor  # conf tower output [B,512,t]
    loc: torch.Tensor  # distances (start, end) in clip frames [B,t,2]
    conf: torch.Tensor  # class logits [B,t,C]


class ProposalFeatures(NamedTuple):
    """Both proposal branches of one level: refined features and their lr_conv boundary features."""

    loc_prop: torch.Tensor  # [B,512,t]
    conf_prop: torch.Tensor  # [B,512,t]
    loc_boundary: torch.Tensor  # [B,1024,t]
    conf_boundary: torch.Tensor  # [B,1024,t]


class RefinedLevel(NamedTuple):
    """One pyramid level after the refine head."""

    prop_loc: torch.Tensor  # [B,t,2]
    prop_conf: torch.Tensor  # [B,t,C]
    center: torch.Tensor  # [B,t,1]
    boundary: ProposalFeatures


class CoarsePyramid(nn.Module):
    def __init__(self, spec: ModelSpec, legacy_bmp_grad: bool = False):
        super().__init__()
        self.spec = spec
        head = spec.head
        width = CONV_CHANNELS
        num_classes = spec.model_classes
        self.frame_num = spec.clip_length
        self.num_classes = num_classes
        self.fpn_strides = spec.fpn_strides

        # Levels read from the backbone: a conv as large as the feature map collapses H×W to 1×1.
        self.pyramids = nn.ModuleList()
        self.loc_heads = nn.ModuleList()
        for source in head.pyramid_sources:
            self.pyramids.append(norm_relu(self._source_projection(spec, source, width), width))
        for _ in range(len(head.pyramid_sources), spec.num_levels):
            self.pyramids.append(norm_relu(Unit1D(width, width, 3, stride=2), width))

        self.loc_tower = nn.Sequential(*[norm_relu(Unit1D(width, width, 3), width) for _ in range(2)])
        self.conf_tower = nn.Sequential(*[norm_relu(Unit1D(width, width, 3), width) for _ in range(2)])
        self.loc_head = Unit1D(width, 2, 3)
        self.conf_head = Unit1D(width, num_classes, 3)
        self.loc_proposal_branch = ProposalBranch(width, 512, legacy_bmp_grad)
        self.conf_proposal_branch = ProposalBranch(width, 512, legacy_bmp_grad)
        self.prop_loc_head = Unit1D(width, 2, 1)
        self.prop_conf_head = Unit1D(width, num_classes, 1)
        self.center_head = Unit1D(width, 1, 3)
        # "deconv" in the official code; it upsamples by repetition, then refines per frame.
        self.deconv = nn.Sequential(
            *norm_relu(Unit1D(width, width, 3), width),
            *norm_relu(Unit1D(width, width, 3), width),
            *norm_relu(Unit1D(width, width, 1), width),
        )

        for _ in range(spec.num_levels):
            self.loc_heads.append(ScaleExp())
        for level, length in enumerate(spec.level_lengths):
            centres = (torch.arange(length, dtype=torch.float64) + 0.5) / length
            columns = [centres] + ([torch.full_like(centres, float(level))] if head.priors_with_level else [])
            self.register_buffer(f"priors_{level}", torch.stack(columns, 1).float(), persistent=False)

    @staticmethod
    def _source_projection(spec: ModelSpec, source: str, width: int) -> nn.Module:
        """What turns one input of the pyramid into ``width`` channels: a 1×1 conv over a feature
        sequence (OpenTAD's AFSDNeck without e2e), or a conv over the whole spatial extent of a
        backbone endpoint (official ``CoarsePyramid``)."""
        if source == FEATURE_SOURCE:
            return Unit1D(spec.feature_dim, width, 1)
        size = spec.feature_size(source)
        return Unit3D(endpoint_channels(source), width, (1, size, size),
                      batch_norm=False, bias=True, relu=False, pad_spatial=False)

    def level_priors(self, level: int) -> torch.Tensor:
        return getattr(self, f"priors_{level}")

    def set_legacy_bmp_grad(self, enabled: bool) -> None:
        self.loc_proposal_branch.legacy_bmp_grad = enabled
        self.conf_proposal_branch.legacy_bmp_grad = enabled

    def _pyramid(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        sources = self.spec.head.pyramid_sources
        levels: list[torch.Tensor] = []
        for index, block in enumerate(self.pyramids):
            if index < len(sources):
                levels.append(block(features[sources[index]]).flatten(2))  # [B,512,t(,1,1)] → [B,512,t]
            else:
                levels.append(block(levels[-1]))
        if len(sources) == 2:
            # top-down: level 1 (upsampled ×2) is added to level 0 only; level 1 stays as is
            levels[0] = levels[0] + F.interpolate(levels[1], size=levels[0].shape[-1], mode="nearest")
        return levels

    def _frame_feature(self, level0: torch.Tensor) -> torch.Tensor:
        upsampled = F.interpolate(level0, size=self.frame_num, mode="nearest")
        return self.deconv(upsampled)

    def forward(self, features: dict[str, torch.Tensor], consistency_only: bool = False):
        """Neck (pyramid + frame feature) → coarse head → refine head (official
        ``CoarsePyramid.forward`` in ``AFSD/thumos14/BDNet.py``, the same operations).

        ``consistency_only``: stop after level 0's boundary pooling (:class:`ConsistencyFeatures`).
        """
        levels = self._pyramid(features)
        frame_feature = self._frame_feature(levels[0])
        if consistency_only:
            level0 = self._proposal_features(0, self._coarse(levels[:1])[0], frame_feature)
            return ConsistencyFeatures(frame_feature, level0.loc_boundary, level0.conf_boundary)
        coarse = self._coarse(levels)
        refined = [self._refine(level, coarse_level, frame_feature) for level, coarse_level in enumerate(coarse)]
        return self._assemble(coarse, refined, frame_feature)

    def _coarse(self, levels: list[torch.Tensor]) -> list[CoarseLevel]:
        """Towers and coarse heads of each level: distances in clip frames and class logits."""
        coarse = []
        for level, feature in enumerate(levels):
            loc_feature = self.loc_tower(feature)
            conf_feature = self.conf_tower(feature)
            loc = self.loc_heads[level](self.loc_head(loc_feature)).permute(0, 2, 1)
            if self.fpn_strides[level] != 1.0:
                loc = loc * self.fpn_strides[level]
            conf = self.conf_head(conf_feature).permute(0, 2, 1)
            coarse.append(CoarseLevel(loc_feature, conf_feature, loc, conf))
        return coarse

    def _proposal_features(self, level: int, coarse: CoarseLevel, frame_feature: torch.Tensor) -> ProposalFeatures:
        """Both proposal branches on one level, pooling the boundaries of its coarse segments."""
        batch, length = coarse.loc.shape[0], coarse.loc.shape[1]
        with torch.no_grad():
            priors = self.level_priors(level)[:, :1].expand(batch, length, 1)
            segments = level_segments(coarse.loc, priors, length, self.frame_num)
            frame_segs = frame_segments(coarse.loc, priors, self.frame_num)
        loc_prop, loc_boundary = self.loc_proposal_branch(coarse.loc_feature, frame_feature, segments, frame_segs)
        conf_prop, conf_boundary = self.conf_proposal_branch(coarse.conf_feature, frame_feature, segments,
                                                             frame_segs)
        return ProposalFeatures(loc_prop, conf_prop, loc_boundary, conf_boundary)

    def _refine(self, level: int, coarse: CoarseLevel, frame_feature: torch.Tensor) -> RefinedLevel:
        """Refine head of one level: offsets, refined logits and centerness from the proposal features."""
        proposal = self._proposal_features(level, coarse, frame_feature)
        return RefinedLevel(
            prop_loc=self.prop_loc_head(proposal.loc_prop).permute(0, 2, 1),
            prop_conf=self.prop_conf_head(proposal.conf_prop).permute(0, 2, 1),
            center=self.center_head(proposal.loc_prop).permute(0, 2, 1),
            boundary=proposal,
        )

    def _assemble(self, coarse: list[CoarseLevel], refined: list[RefinedLevel],
                  frame_feature: torch.Tensor) -> AFSDOutput:
        """All levels concatenated, plus the boundary features the training losses read."""
        half = frame_feature.shape[1] // 2
        level0 = refined[0].boundary
        boundary_half = level0.loc_boundary.shape[1] // 2
        priors = torch.cat([self.level_priors(level) for level in range(len(coarse))], 0).unsqueeze(0)
        return AFSDOutput(
            loc=torch.cat([level.loc for level in coarse], 1),
            conf=torch.cat([level.conf for level in coarse], 1),
            prop_loc=torch.cat([level.prop_loc for level in refined], 1),
            prop_conf=torch.cat([level.prop_conf for level in refined], 1),
            center=torch.cat([level.center for level in refined], 1),
            priors=priors,
            start=frame_feature[:, :half].permute(0, 2, 1).contiguous(),
            end=frame_feature[:, half:].permute(0, 2, 1).contiguous(),
            start_loc_prop=level0.loc_boundary[:, :boundary_half].permute(0, 2, 1).contiguous(),
            end_loc_prop=level0.loc_boundary[:, boundary_half:].permute(0, 2, 1).contiguous(),
            start_conf_prop=level0.conf_boundary[:, :boundary_half].permute(0, 2, 1).contiguous(),
            end_conf_prop=level0.conf_boundary[:, boundary_half:].permute(0, 2, 1).contiguous(),
        )


# --------------------------------------------------------------------------------------------
# The whole network
# --------------------------------------------------------------------------------------------
class FeatureInput(nn.Module):
    """The "backbone" of a feature model: the window as the pyramid's only input (no weights)."""

    def forward(self, window: torch.Tensor, endpoints: tuple[str, ...]) -> dict[str, torch.Tensor]:
        return {FEATURE_SOURCE: window}


class AFSD(nn.Module):
    """AFSD: ``model(clip [B, in_channels, T, crop, crop]) -> AFSDOutput``; a feature model
    (``spec.input == "features"``) takes ``[B, feature_dim, T/4]`` and has no backbone weights.

    ``model.consistency_features(clip)`` (or ``model(clip, return_consistency_features=True)``)
    runs only up to pyramid level 0 and returns the three maps of the boundary-consistency loss.
    """

    def __init__(
        self,
        spec: ModelSpec,
        freeze_bn: bool = True,
        freeze_bn_affine: bool = True,
        legacy_bmp_grad: bool = False,
    ):
        super().__init__()
        self.spec = spec
        # Same construction order as the official model (head, its init, then the backbone):
        # the default initialisers then draw the same random numbers for the same seed.
        self.coarse_pyramid_detection = CoarsePyramid(spec, legacy_bmp_grad)
        self._init_head()
        self.backbone = (FeatureInput() if spec.input == "features"
                         else I3DBackbone(spec.in_channels, freeze_bn, freeze_bn_affine))

    def _init_head(self) -> None:
        """Glorot-uniform convs with zero bias; ANet: N(0, 0.01) for the towers/heads (official
        ``BDNet.weight_init`` and ``BDNet.reset_params``)."""
        head = self.coarse_pyramid_detection
        for module in head.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv3d)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.spec.head.normal_head_init:
            for part in (
                head.loc_tower, head.conf_tower, head.loc_head, head.conf_head,
                head.loc_proposal_branch, head.conf_proposal_branch,
                head.prop_loc_head, head.prop_conf_head, head.center_head,
            ):
                for module in part.modules():
                    if isinstance(module, nn.Conv1d):
                        nn.init.normal_(module.weight, mean=0.0, std=0.01)
                        nn.init.zeros_(module.bias)

    @property
    def legacy_bmp_grad(self) -> bool:
        return self.coarse_pyramid_detection.loc_proposal_branch.legacy_bmp_grad

    @legacy_bmp_grad.setter
    def legacy_bmp_grad(self, enabled: bool) -> None:
        self.coarse_pyramid_detection.set_legacy_bmp_grad(enabled)

    def _check_clip(self, clip: torch.Tensor) -> None:
        spec = self.spec
        if spec.input == "features":
            expected = (spec.feature_dim, spec.feature_steps)
        else:
            expected = (spec.in_channels, spec.clip_length, spec.crop_size, spec.crop_size)
        if clip.dim() != len(expected) + 1 or tuple(clip.shape[1:]) != expected:
            raise InputError(f"expected a {spec.input} window [B, {', '.join(map(str, expected))}], "
                             f"got {list(clip.shape)}")

    def forward(self, clip: torch.Tensor, return_consistency_features: bool = False):
        self._check_clip(clip)
        features = self.backbone(clip, self.spec.head.pyramid_sources)
        return self.coarse_pyramid_detection(features, consistency_only=return_consistency_features)

    def consistency_features(self, clip: torch.Tensor) -> ConsistencyFeatures:
        return self(clip, return_consistency_features=True)
