"""Twins (PCPVT, SVT) with a visible-tokens-only (GreenMIM) forward path."""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.utils.checkpoint as cp
from mmpretrain.models import PCPVT, SVT
from mmpretrain.models.backbones.twins import LocallyGroupedSelfAttention
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ..utils.group_attention import group_window_attention
from ..utils.grouping import GroupPlan
from ..utils.window_plan import (UnitGroupPlan, plan_unit_windows,
                                 plans_to_device)
from ..utils.masking import (as_unit_mask, check_unit_mask,
                             unit_grid, visible_unit_ids)
from ..utils.sparse_conv import (SparseConvPlan, check_submanifold,
                                 resolve_backend,
                                 sparse_conv2d)
from ..utils.nonfinite import isolate_nonfinite, mark_nonfinite
from ..utils.transfer import to_device
from ..utils.unit_sparse_conv import UnitSparseConvPlan
from ..utils.unit_conv import (check_cell_conv, conv_on_cells,
                               embed_visible_units)
from .masked_backbone import MaskedBackboneMixin

#: plans of one stage: ``'peg'`` (a sparse-conv plan), ``'lsa'`` (a group
#: plan, or None when the stage has no locally-grouped attention)
TwinsStagePlan = Dict[str, Union[UnitSparseConvPlan, SparseConvPlan,
                                  UnitGroupPlan, GroupPlan, None]]


def green_gsa(attn: nn.Module, x: Tensor) -> Tensor:
    """Global sub-sampled attention whose keys come from visible cells only.

    Every spatial-reduction cell lies inside a mask unit, so the sr conv is
    :func:`conv_on_cells`; every sample has the same number of visible
    cells, so attention runs per sample without a mask.

    Args:
        attn (nn.Module): mmpretrain ``GlobalSubsampledAttention``.
        x (Tensor): ``(B, N, C)`` normalised visible tokens.

    Returns:
        Tensor: ``(B, N, C)``.
    """
    b, n, c = x.shape
    heads = attn.num_heads
    # (B, N, C) -> (B, heads, N, C/heads)
    q = attn.q(x).reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)
    if attn.sr_ratio > 1:
        x = attn.norm(conv_on_cells(attn.sr, x))  # (B, N/r², C)
    # (B, N_kv, 2C) -> (2, B, heads, N_kv, C/heads)
    kv = attn.kv(x).reshape(b, -1, 2, heads, attn.head_dims).permute(
        2, 0, 3, 1, 4)
    drop = attn.attn_drop if attn.training else 0.
    out = attn.scaled_dot_product_attention(q, kv[0], kv[1], dropout_p=drop)
    out = out.transpose(1, 2).reshape(b, n, attn.embed_dims)  # (B, N, C)
    return attn.out_drop(attn.proj_drop(attn.proj(out)))


def green_twins_layer(layer: nn.Module, x: Tensor,
                      plan: Optional[GroupPlan]) -> Tensor:
    """An mmpretrain ``GSAEncoderLayer`` or ``LSAEncoderLayer`` on visible
    tokens (same weights).

    Args:
        layer (nn.Module): The encoder layer.
        x (Tensor): ``(B, N, C)`` visible tokens.
        plan (GroupPlan, optional): Grouping of the stage's LSA windows.

    Returns:
        Tensor: ``(B, N, C)``.
    """
    y = layer.norm1(x)
    if isinstance(layer.attn, LocallyGroupedSelfAttention):
        y = group_window_attention(layer.attn, y, plan)
    else:
        y = green_gsa(layer.attn, y)
    x = x + layer.drop_path(y)
    return x + layer.drop_path(layer.ffn(layer.norm2(x)))


class GreenTwinsMixin(MaskedBackboneMixin):
    """The masked path shared by :class:`GreenPCPVT` and :class:`GreenSVT`.

    Args:
        arch (str | dict): Twins arch, as in mmpretrain.
        sparse_conv_backend (str): Backend of the sparse PEG conv:
            ``'auto'``, ``'gather'`` or ``'spconv'``. The PEG is depthwise,
            which only ``'gather'`` supports. Defaults to ``'auto'``.
        group_cost (Sequence[float]): ``(a, b)`` of the LSA grouping cost
            model ``n_groups * (a * g**2 + b * g)``. Defaults to (1.0, 32.0).
        with_cp (bool): Gradient checkpointing of every encoder layer on
            the masked path. mmpretrain's dense PCPVT / SVT have none, so a
            dense forward (``mask=None``) that records gradients raises.
            Defaults to False.
        init_cfg (dict, optional): Initialization config. Defaults to None.
        **kwargs: Other arguments of the mmpretrain parent.
    """

    def __init__(self,
                 arch: Union[str, dict],
                 sparse_conv_backend: str = 'auto',
                 group_cost: Sequence[float] = (1.0, 32.0),
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None,
                 **kwargs):
        if isinstance(arch, str) and arch.lower() not in self.arch_zoo:
            raise ValueError(
                f'Unknown {type(self).__name__} arch {arch!r}; choose one of '
                f'{sorted(set(self.arch_zoo))} or pass a dict with the keys '
                f'{sorted(self.essential_keys)}.')
        super().__init__(arch, init_cfg=init_cfg, **kwargs)
        self.with_cp = bool(with_cp)
        self.group_cost = tuple(float(c) for c in group_cost)
        self.sparse_conv_backend = sparse_conv_backend
        for peg in self.position_encodings:
            if peg.stride != 1:
                raise ValueError('The masked path needs stride-1 PEGs.')
            check_submanifold(peg.proj)
            resolve_backend(peg.proj, sparse_conv_backend)  # clear errors
        sides = [check_cell_conv(pe.projection, f'patch_embeds[{i}]')
                 for i, pe in enumerate(self.patch_embeds)]
        self.patch_size = sides[0]
        self.mask_unit = math.prod(sides)
        # tokens per unit side at every stage
        self.unit_sides = [self.mask_unit // math.prod(sides[:i + 1])
                           for i in range(self.num_stage)]
        for i, stage in enumerate(self.stages):
            for layer in stage:
                sr = getattr(layer.attn, 'sr_ratio', 1)
                if sr == 1:
                    continue
                check_cell_conv(layer.attn.sr, f'the sr conv of stage {i}')
                if self.unit_sides[i] % sr:
                    raise ValueError(
                        f'sr_ratio {sr} of stage {i} spans several mask '
                        f'units ({self.unit_sides[i]} tokens per unit '
                        f'side); the masked path needs sr cells inside '
                        f'units.')

    def forward(self, x: Tensor, mask: Optional[Tensor] = None,
                plans: Optional[List[TwinsStagePlan]] = None
                ) -> Tuple[Tensor]:
        """As :meth:`MaskedBackboneMixin.forward`; a dense forward that
        records gradients refuses ``with_cp`` instead of ignoring it."""
        if mask is None and self.with_cp and torch.is_grad_enabled():
            raise NotImplementedError(
                f'{type(self).__name__}(with_cp=True) checkpoints the masked '
                f'path only: the dense forward (mask=None) is mmpretrain\'s, '
                f'which has no gradient checkpointing. Build it with '
                f'with_cp=False, or run the dense forward under '
                f'torch.no_grad().')
        return super().forward(x, mask, plans)

    # ------------------------------------------------------------------
    def make_plans(self, mask: Tensor, img_hw: Tuple[int, int]
                   ) -> List[TwinsStagePlan]:
        """Sparse-conv and grouping plans of every stage (on CPU).

        Args:
            mask (Tensor): ``(B, L)`` unit mask, 1 = masked.
            img_hw (tuple[int, int]): Image size.

        Returns:
            list[dict]: Per stage, ``{'peg': UnitSparseConvPlan, 'lsa':
            UnitGroupPlan or None}`` (host halves; the forward expands
            them on the model's device).
        """
        grid = unit_grid(img_hw, self.mask_unit)
        mask = mask.reshape(mask.shape[0], -1).cpu().bool()
        vis = visible_unit_ids(mask)  # (B, n_vis)
        visible = (~mask).float()  # (B, L)
        plans = []
        for i, stage in enumerate(self.stages):
            side = self.unit_sides[i]
            hw = (grid[0] * side, grid[1] * side)
            levels = int(math.log2(side))
            peg = self.position_encodings[i].proj
            plan: TwinsStagePlan = dict(
                peg=UnitSparseConvPlan(vis, grid[1], levels, hw,
                                       peg.kernel_size, peg.dilation),
                lsa=None)
            windows = {layer.attn.window_size for layer in stage
                       if isinstance(layer.attn, LocallyGroupedSelfAttention)}
            if len(windows) > 1:
                raise ValueError(f'Stage {i} mixes LSA window sizes '
                                 f'{sorted(windows)}.')
            if windows:
                plan['lsa'] = plan_unit_windows(
                    vis, visible, grid, levels, windows.pop(), 0,
                    self.group_cost)
            plans.append(plan)
        return plans

    def forward_masked(self, x: Tensor, mask: Tensor,
                       plans: Optional[List[TwinsStagePlan]] = None
                       ) -> Tuple[Tensor]:
        """Visible-tokens-only forward; see :meth:`forward`."""
        mask = as_unit_mask(mask)  # CPU bool, from any array-like
        grid = check_unit_mask(x.shape, mask, self.mask_unit)
        mask = mask.reshape(mask.shape[0], -1)
        if plans is None:
            plans = self.make_plans(mask, x.shape[-2:])
        # index planning stays on the CPU: no host-device sync; every copy
        # is queued before the first device computation
        vis = to_device(visible_unit_ids(mask.cpu()), x.device)  # (B, n_vis)
        plans = plans_to_device(plans, x.device)
        outs = []
        for i in range(self.num_stage):
            embed = self.patch_embeds[i]
            if i == 0:
                x = embed_visible_units(embed.projection, x, vis, grid,
                                        self.mask_unit)  # (B, N_0, C_0)
                # a NaN pixel stays in its sample (see utils.nonfinite)
                x, bad = isolate_nonfinite(x)
            else:
                x = conv_on_cells(embed.projection, x)  # (B, N_i, C_i)
            if embed.norm is not None:
                x = embed.norm(x)
            x = self.position_encoding_drops[i](x)
            for j, layer in enumerate(self.stages[i]):
                if self.with_cp and x.requires_grad:
                    x = cp.checkpoint(green_twins_layer, layer, x,
                                      plans[i]['lsa'], use_reentrant=False)
                else:
                    x = green_twins_layer(layer, x, plans[i]['lsa'])
                if j == 0:  # PEG: submanifold depthwise conv + identity
                    x = x + sparse_conv2d(self.position_encodings[i].proj, x,
                                          plans[i]['peg'],
                                          self.sparse_conv_backend)
            x = getattr(self, f'norm_after_stage{i}')(x)
            if i in self.out_indices:
                outs.append(x)
        return mark_nonfinite(outs, bad)


@MODELS.register_module()
class GreenPCPVT(GreenTwinsMixin, PCPVT):
    """Twins-PCPVT that can run on visible mask units only.

    GreenMIM: `Green Hierarchical Vision Transformer for Masked Image
    Modeling <https://arxiv.org/abs/2205.13515>`_; Twins: `Revisiting the
    Design of Spatial Attention in Vision Transformers
    <https://arxiv.org/abs/2104.13840>`_.

    With ``mask=None`` this is exactly mmpretrain's ``PCPVT`` (same
    forward, same state-dict keys). With a mask, only the visible tokens go
    through every stage: the patch embeddings (kernel = stride) act on whole
    visible units as a reshape plus linear, global sub-sampled attention
    takes its keys from visible units only (the spatial-reduction cells,
    sr_ratios 8, 4, 2, 1 at strides 4, 8, 16, 32, are the 32 px mask units),
    and the PEG is a submanifold sparse depthwise conv.

    Mask convention: ``(B, Hu * Wu)`` or ``(B, Hu, Wu)``, **1 = masked**,
    the same number of visible units in every sample; the mask unit is the
    product of the strides (32 px for the usual archs).

    Args:
        arch (str | dict): PCPVT arch (``'small'``, ``'base'``, ``'large'``
            or a dict, see mmpretrain).
        sparse_conv_backend (str): ``'auto'``, ``'gather'`` or
            ``'spconv'`` for the PEG. Defaults to ``'auto'``.
        group_cost (Sequence[float]): Unused by PCPVT (no LSA), kept for a
            uniform interface. Defaults to (1.0, 32.0).
        with_cp (bool): Gradient checkpointing of every encoder layer on
            the masked path (a dense forward with gradients refuses it).
            Defaults to False.
        init_cfg (dict, optional): Initialization config. Defaults to None.
        **kwargs: Other arguments of mmpretrain ``PCPVT``.
    """


@MODELS.register_module()
class GreenSVT(GreenTwinsMixin, SVT):
    """Twins-SVT that can run on visible mask units only.

    GreenMIM: `Green Hierarchical Vision Transformer for Masked Image
    Modeling <https://arxiv.org/abs/2205.13515>`_; Twins: `Revisiting the
    Design of Spatial Attention in Vision Transformers
    <https://arxiv.org/abs/2104.13840>`_.

    As :class:`GreenPCPVT`, plus locally-grouped attention (LSA) as Group
    Window Attention with optimal grouping and a blocking-only mask (Twins
    has no relative position bias). A stage whose map fits in one window
    attends over each sample's visible tokens.

    Padding: dense SVT pads a map that is not a multiple of the window (and
    mmpretrain's padding mask is only applied when both sides are padded).
    The masked path treats padding as masked, so with nothing masked the
    two agree exactly when every stage map is a multiple of its window
    (224 px with window 7).

    Args:
        arch (str | dict): SVT arch (``'small'``, ``'base'``, ``'large'``
            or a dict with ``window_sizes``, see mmpretrain).
        sparse_conv_backend (str): ``'auto'``, ``'gather'`` or
            ``'spconv'`` for the PEG. Defaults to ``'auto'``.
        group_cost (Sequence[float]): ``(a, b)`` of the LSA grouping cost
            model. Defaults to (1.0, 32.0).
        with_cp (bool): Gradient checkpointing of every encoder layer on
            the masked path (a dense forward with gradients refuses it).
            Defaults to False.
        init_cfg (dict, optional): Initialization config. Defaults to None.
        **kwargs: Other arguments of mmpretrain ``SVT``.
    """
