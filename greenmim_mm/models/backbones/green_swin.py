"""Swin Transformer with a visible-tokens-only (GreenMIM) forward path."""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch.utils.checkpoint as cp
from mmpretrain.models import SwinTransformer
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ..utils.group_attention import group_window_attention
from ..utils.grouping import GroupPlan, effective_shift
from ..utils.layer_norm import layer_norm
from ..utils.masking import (as_unit_mask, check_unit_mask, token_coords,
                             unit_grid, visible_unit_ids)
from ..utils.nonfinite import isolate_nonfinite, mark_nonfinite
from ..utils.transfer import to_device
from ..utils.unit_conv import embed_visible_units
from ..utils.window_plan import (UnitGroupPlan, plan_unit_windows,
                                 plans_to_device)
from .masked_backbone import MaskedBackboneMixin

#: plans of one stage, keyed by (window, effective shift)
StagePlans = Dict[Tuple[int, int], Union[UnitGroupPlan, GroupPlan]]


def merge_visible(downsample: nn.Module, x: Tensor) -> Tensor:
    """mmcv ``PatchMerging`` on visible tokens in Morton order.

    Each run of four tokens is one whole 2x2 merge group, so merging is a
    reshape into the channel-major layout of ``nn.Unfold`` plus the usual
    norm and linear reduction.

    Args:
        downsample (nn.Module): An mmcv ``PatchMerging`` (kernel 2, stride 2).
        x (Tensor): ``(B, N, C)`` tokens, ``N`` a multiple of 4.

    Returns:
        Tensor: ``(B, N / 4, C_out)``.
    """
    b, n, c = x.shape
    # (B, N, C) -> (B, N/4, 4, C) -> (B, N/4, C, 4) -> (B, N/4, 4C)
    x = x.view(b, n // 4, 4, c).transpose(2, 3).reshape(b, n // 4, 4 * c)
    if downsample.norm is not None:
        x = layer_norm(downsample.norm, x)
    return downsample.reduction(x)


def green_swin_block(block: nn.Module, x: Tensor, plan: GroupPlan) -> Tensor:
    """An mmpretrain ``SwinBlock`` on visible tokens (same weights).

    Args:
        block (nn.Module): The ``SwinBlock``.
        x (Tensor): ``(B, N, C)`` visible tokens.
        plan (GroupPlan): Grouping for this block's window and shift.

    Returns:
        Tensor: ``(B, N, C)``.
    """

    def _inner_forward(x):
        identity = x
        x = layer_norm(block.norm1, x)
        x = group_window_attention(block.attn.w_msa, x, plan)
        x = block.attn.drop(x) + identity
        return block.ffn(layer_norm(block.norm2, x), identity=x)

    if block.with_cp and x.requires_grad:
        return cp.checkpoint(_inner_forward, x, use_reentrant=False)
    return _inner_forward(x)


@MODELS.register_module()
class GreenSwinTransformer(MaskedBackboneMixin, SwinTransformer):
    """Swin Transformer that can run on visible mask units only.

    GreenMIM: `Green Hierarchical Vision Transformer for Masked Image
    Modeling <https://arxiv.org/abs/2205.13515>`_.

    With ``mask=None`` this is exactly mmpretrain's ``SwinTransformer``
    (same forward, same state-dict keys), so checkpoints move freely
    between the two. With a mask, only the visible tokens go through every
    stage: patch embedding on visible units, Group Window Attention with
    optimal grouping for regular and shifted windows, and patch merging as
    a reshape.

    Mask convention: ``mask`` is ``(B, Hu * Wu)`` or ``(B, Hu, Wu)`` over
    the mask-unit grid, **1 = masked** (as in MAE), with the same number of
    visible units in every sample. The mask unit is the final stride
    (``patch_size * 2 ** (num_stages - 1)``, 32 px for the usual Swin).

    Padding: dense Swin zero-pads a map that is not a multiple of the
    window and lets the padding into attention. The masked path treats
    padding as masked, so with nothing masked the two agree exactly only
    when every windowed stage is a multiple of the window. A stage whose
    map fits inside one window uses plain attention over each sample's
    visible tokens.

    Args:
        group_cost (Sequence[float]): ``(a, b)`` of the grouping cost model
            ``n_groups * (a * g**2 + b * g)``; ``b`` charges every padded
            slot (gathers, bias rows). Defaults to (1.0, 32.0).
        init_cfg (dict, optional): Initialization config. Defaults to None.
        **kwargs: Arguments of mmpretrain ``SwinTransformer``.
    """

    def __init__(self,
                 group_cost: Sequence[float] = (1.0, 32.0),
                 init_cfg: Optional[dict] = None,
                 **kwargs):
        window = kwargs.get('window_size', 7)
        if isinstance(window, bool) or not isinstance(window, int) \
                or window < 1:
            raise ValueError(
                f'window_size must be a positive integer, got {window!r}.')
        arch = kwargs.get('arch', 'tiny')
        if isinstance(arch, str) and arch.lower() not in self.arch_zoo:
            raise ValueError(
                f'Unknown Swin arch {arch!r}; choose one of '
                f'{sorted(set(self.arch_zoo))} or pass a dict with '
                f'embed_dims, depths and num_heads.')
        super().__init__(init_cfg=init_cfg, **kwargs)
        self.group_cost = tuple(float(c) for c in group_cost)
        proj = self.patch_embed.projection
        if proj.kernel_size != proj.stride:
            raise ValueError('GreenSwinTransformer needs a patch embedding '
                             'whose kernel equals its stride, got kernel '
                             f'{proj.kernel_size}, stride {proj.stride}.')
        for stage in self.stages:
            ds = stage.downsample
            if ds is not None and (ds.sampler.kernel_size != (2, 2)
                                   or ds.sampler.stride != (2, 2)):
                raise ValueError('The masked path needs 2x2 patch merging '
                                 'with stride 2.')
        self.patch_size = proj.stride[0]
        self.mask_unit = self.patch_size * 2**(self.num_layers - 1)

    # ------------------------------------------------------------------
    @staticmethod
    def _block_keys(stage: nn.Module, hw: Tuple[int, int]
                    ) -> List[Tuple[int, int]]:
        """Plan key ``(window, effective shift)`` of every block of a stage
        whose feature map is ``hw``."""
        return [(b.attn.window_size,
                 effective_shift(hw, b.attn.window_size, b.attn.shift_size,
                                 b.attn.pad_small_map))
                for b in stage.blocks]

    def make_plans(self, mask: Tensor, img_hw: Tuple[int, int]
                   ) -> List[StagePlans]:
        """Host halves of the grouping plans of every stage (window-level
        work only; see :mod:`..utils.window_plan`). The forward expands
        them on the model's device.

        Args:
            mask (Tensor): ``(B, L)`` unit mask, 1 = masked.
            img_hw (tuple[int, int]): Image size.

        Returns:
            list[dict]: Per stage, ``{(window, shift): UnitGroupPlan}``.
        """
        grid = unit_grid(img_hw, self.mask_unit)
        mask = mask.reshape(mask.shape[0], -1).cpu().bool()
        vis = visible_unit_ids(mask)  # (B, n_vis)
        visible = (~mask).float()  # (B, L)
        levels = int(math.log2(self.mask_unit // self.patch_size))
        plans = []
        for i, stage in enumerate(self.stages):
            hw = (grid[0] << (levels - i), grid[1] << (levels - i))
            stage_plans: StagePlans = {}
            for key in self._block_keys(stage, hw):
                if key not in stage_plans:
                    stage_plans[key] = plan_unit_windows(
                        vis, visible, grid, levels - i, *key,
                        self.group_cost)
            plans.append(stage_plans)
        return plans

    def _embed_visible(self, x: Tensor, vis: Tensor,
                       grid: Tuple[int, int]) -> Tensor:
        """Patch-embed the visible units: ``(B, n_vis * T_u, C)``."""
        feat = embed_visible_units(self.patch_embed.projection, x, vis, grid,
                                   self.mask_unit)
        if self.patch_embed.norm is not None:
            feat = self.patch_embed.norm(feat)
        return feat

    def forward_masked(self, x: Tensor, mask: Tensor,
                       plans: Optional[List[StagePlans]] = None
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
        levels = int(math.log2(self.mask_unit // self.patch_size))
        h0, w0 = grid[0] << levels, grid[1] << levels

        x = self._embed_visible(x, vis, grid)  # (B, N_0, C)
        x, bad = isolate_nonfinite(x)  # a NaN pixel stays in its sample
        if self.use_abs_pos_embed:
            pos = resize_pos_embed(self.absolute_pos_embed,
                                   self.patch_resolution, (h0, w0),
                                   self.interpolate_mode,
                                   self.num_extra_tokens)  # (1, H0*W0, C)
            rc = token_coords(vis, grid[1], levels)  # (B, N_0, 2)
            x = x + pos[0][rc[..., 0] * w0 + rc[..., 1]]
        x = self.drop_after_pos(x)

        outs = []
        for i, stage in enumerate(self.stages):
            hw = (h0 >> i, w0 >> i)
            for block, key in zip(stage.blocks, self._block_keys(stage, hw)):
                x = green_swin_block(block, x, plans[i][key])
            if stage.downsample is not None and self.out_after_downsample:
                x = merge_visible(stage.downsample, x)
            if i in self.out_indices:
                outs.append(getattr(self, f'norm{i}')(x))
            if stage.downsample is not None and \
                    not self.out_after_downsample:
                x = merge_visible(stage.downsample, x)
        return mark_nonfinite(outs, bad)
