"""ConvNeXt (V1, V2) with a visible-tokens-only (GreenMIM) forward path."""
import math
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmpretrain.models import ConvNeXt
from mmpretrain.models.utils import GRN
from mmpretrain.registry import MODELS
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ..utils.masking import (as_unit_mask, check_unit_mask, unit_grid,
                             visible_unit_ids)
from ..utils.sparse_conv import (SparseConvPlan, check_submanifold,
                                 resolve_backend, sparse_conv2d)
from ..utils.transfer import to_device
from ..utils.unit_sparse_conv import (UnitSparseConvPlan, UnitTilePlan,
                                      tile_depthwise_conv2d)
from ..utils.unit_conv import (check_cell_conv, conv_on_cells,
                               embed_visible_units)
from .masked_backbone import MaskedBackboneMixin


def token_layer_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """mmpretrain ``LN2d`` (or any ``nn.LayerNorm``) over the channels of
    ``(B, N, C)`` tokens, with the layer's own weights."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias,
                        norm.eps)


def pointwise(layer: nn.Module, x: Tensor) -> Tensor:
    """A pointwise layer (``nn.Linear``, or a 1x1 ``nn.Conv2d`` when
    ``linear_pw_conv=False``) on ``(B, N, C_in)`` tokens."""
    if isinstance(layer, nn.Linear):
        return layer(x)
    # (C_out, C_in, 1, 1) -> (C_out, C_in): a view of the conv's weight
    return F.linear(x, layer.weight.flatten(1), layer.bias)


class _SparseGRN(torch.autograd.Function):
    """GRN over ``(B, N, C)`` tokens with a hand-written backward.

    ``y = gamma * (x * nx) + beta + x`` is computed as the one fused pass
    ``y = x * (gamma * nx + 1) + beta``, and the backward needs three passes
    over ``x``-sized tensors (``sum_n dy * x``, ``dy * s`` and one
    ``addcmul``) where autograd's graph of the formula takes about a dozen
    and keeps three ``x``-sized tensors alive (the stage-1 hidden tensor is
    15 MB at batch 8, so these memory-bound passes cost more than its
    matmuls on the CPU). Only ``x`` and ``(B, 1, C)`` statistics are saved.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        # the L2 norm in fp32 (as autocast runs the parent's torch.norm);
        # square-sum-sqrt is several times faster than torch.norm over
        # dim 1 of a (B, N, C) tensor on the CPU; the clamp keeps an
        # all-zero channel's gradient 0, as torch.norm's
        xf = x.float() if x.element_size() < 4 else x  # fp16/bf16 -> fp32
        sq = xf.square().sum(1, keepdim=True)  # (B, 1, C)
        tiny = torch.finfo(sq.dtype).tiny
        gx = sq.clamp_min(tiny).sqrt()  # (B, 1, C)
        denom = gx.mean(dim=-1, keepdim=True) + eps  # (B, 1, 1)
        nx = gx / denom  # (B, 1, C)
        scale = nx * gamma + 1  # (B, 1, C)
        ctx.save_for_backward(x, gamma, sq >= tiny, gx, denom, nx, scale)
        return torch.addcmul(beta, x, scale)  # (B, N, C)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, gamma, live, gx, denom, nx, scale = ctx.saved_tensors
        need_x, need_g, need_b = ctx.needs_input_grad[:3]
        xf = x.to(dy.dtype)
        grad_x = grad_g = grad_b = None
        a = (dy * xf).sum(1, keepdim=True) if need_x or need_g else None
        if need_g:  # dL/dgamma = sum_b nx * sum_n dy * x
            grad_g = (a * nx).sum((0, 1)).to(gamma.dtype)
        if need_b:
            grad_b = dy.sum((0, 1)).to(gamma.dtype)
        if need_x:
            dnx = a * gamma  # (B, 1, C)
            # nx = gx / (mean_c gx + eps)
            dgx = (dnx - (dnx * nx).mean(-1, keepdim=True)) / denom
            # gx = sqrt(clamp(sq, tiny)), sq = sum_n x^2: dx += 2 x dsq
            two_dsq = torch.where(live, dgx / gx, 0)  # (B, 1, C)
            grad_x = torch.mul(dy, scale).addcmul_(xf, two_dsq).to(x.dtype)
        return grad_x, grad_g, grad_b, None


def sparse_grn(grn: GRN, x: Tensor) -> Tensor:
    """ConvNeXt-V2 Global Response Normalization over the visible tokens.

    The per-channel spatial L2 norm is taken over each sample's visible
    tokens only, as FCMAE's sparse GRN does (it equals the norm of the map
    with masked positions zeroed). Same result as mmpretrain's formula
    (``gamma * (x * nx) + beta + x``) up to rounding, in fewer memory
    passes (:class:`_SparseGRN`).

    Args:
        grn (GRN): mmpretrain ``GRN``.
        x (Tensor): ``(B, N, C)`` visible tokens of every sample.

    Returns:
        Tensor: ``(B, N, C)``.
    """
    return _SparseGRN.apply(x, grn.gamma, grn.beta, grn.eps)


def green_convnext_block(block: nn.Module, x: Tensor, plan: SparseConvPlan,
                         backend: str = 'auto',
                         tiles: Optional[UnitTilePlan] = None) -> Tensor:
    """An mmpretrain ``ConvNeXtBlock`` on visible tokens (same weights).

    Args:
        block (nn.Module): The ``ConvNeXtBlock``.
        x (Tensor): ``(B, N, C)`` visible tokens.
        plan (SparseConvPlan): Neighbour table of the stage's 7x7 conv.
        backend (str): Sparse-conv backend. Defaults to ``'auto'``.
        tiles (UnitTilePlan, optional): With it, the depthwise conv's
            forward is tiled (:func:`.tile_depthwise_conv2d`) and its
            backward is the gather conv's over ``plan``. Defaults to None.

    Returns:
        Tensor: ``(B, N, C)``.
    """

    def _inner_forward(x):
        shortcut = x
        # submanifold depthwise conv: masked neighbours read as zero
        if tiles is not None:
            x = tile_depthwise_conv2d(block.depthwise_conv, x, tiles, plan)
        else:
            x = sparse_conv2d(block.depthwise_conv, x, plan, backend)
        x = token_layer_norm(block.norm, x)
        x = block.act(pointwise(block.pointwise_conv1, x))  # (B, N, 4C)
        if block.grn is not None:
            x = sparse_grn(block.grn, x)
        x = pointwise(block.pointwise_conv2, x)  # (B, N, C)
        if block.gamma is not None:
            x = x * block.gamma
        return shortcut + block.drop_path(x)

    if block.with_cp and x.requires_grad:
        return cp.checkpoint(_inner_forward, x, use_reentrant=False)
    return _inner_forward(x)


@MODELS.register_module()
class GreenConvNeXt(MaskedBackboneMixin, ConvNeXt):
    """ConvNeXt (V1 and V2) that can run on visible mask units only.

    GreenMIM: `Green Hierarchical Vision Transformer for Masked Image
    Modeling <https://arxiv.org/abs/2205.13515>`_; ConvNeXt: `A ConvNet for
    the 2020s <https://arxiv.org/abs/2201.03545>`_; ConvNeXt V2:
    `Co-designing and Scaling ConvNets with Masked Autoencoders
    <http://arxiv.org/abs/2301.00808>`_.

    With ``mask=None`` this is exactly mmpretrain's ``ConvNeXt`` (same
    forward, same state-dict keys), so checkpoints load into plain
    ``mmpretrain.ConvNeXt``. With a mask, only the visible tokens are
    computed: the stem (4x4, stride 4) and the downsampling convs (2x2,
    stride 2) act on whole visible units as a reshape plus linear, every
    7x7 depthwise conv is a submanifold sparse conv over the visible tokens
    (masked positions read as zero), and LayerNorm, the pointwise MLP,
    layer scale and drop path run per visible token. V2's GRN takes its
    spatial norm over each sample's visible tokens (FCMAE's sparse GRN).
    Nothing mixes samples, so a non-finite pixel stays in its sample.

    Mask convention: ``(B, Hu * Wu)`` or ``(B, Hu, Wu)``, **1 = masked**,
    the same number of visible units in every sample; the mask unit is the
    final stride (32 px for the four-stage archs). The masked path returns
    tokens, so it needs ``gap_before_final_norm=False``.

    Args:
        arch (str | dict): ConvNeXt arch (``'tiny'``, ``'base'``, ... or a
            dict with ``depths`` and ``channels``). Defaults to ``'tiny'``.
        sparse_conv_backend (str): Backend of the sparse depthwise conv:
            ``'auto'`` (a tiled forward, :func:`.tile_depthwise_conv2d`,
            in stages whose unit side is at least ``(k - 1) / 1.5``
            tokens, the gather conv elsewhere and in every backward) or
            ``'gather'`` (gather conv only; spconv has no depthwise conv).
            Defaults to ``'auto'``.
        init_cfg (dict | list, optional): Initialization config. Defaults
            to None (the parent's TruncNormal / Constant init).
        **kwargs: Other arguments of mmpretrain ``ConvNeXt``.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 sparse_conv_backend: str = 'auto',
                 init_cfg: Optional[Union[dict, list]] = None,
                 **kwargs):
        if isinstance(arch, str) and arch not in self.arch_settings:
            raise ValueError(
                f'Unknown GreenConvNeXt arch {arch!r}; choose one of '
                f'{sorted(self.arch_settings)} or pass a dict with the keys '
                "'depths' and 'channels'.")
        if init_cfg is not None:
            kwargs['init_cfg'] = init_cfg
        super().__init__(arch, **kwargs)
        self.sparse_conv_backend = sparse_conv_backend
        sides = []
        for i, layer in enumerate(self.downsample_layers):
            conv, norm = (layer[0], layer[1]) if i == 0 else (layer[1],
                                                              layer[0])
            sides.append(check_cell_conv(conv, f'downsample_layers[{i}]'))
            if not isinstance(norm, nn.LayerNorm):
                raise ValueError(
                    'The masked path needs LayerNorm (LN2d) norms, got '
                    f'{type(norm).__name__} in downsample_layers[{i}].')
        self.patch_size = sides[0]
        self.mask_unit = math.prod(sides)
        #: tokens per mask-unit side at every stage
        self.unit_sides = [self.mask_unit // math.prod(sides[:i + 1])
                           for i in range(self.num_stages)]
        for i, stage in enumerate(self.stages):
            for block in stage:
                check_submanifold(block.depthwise_conv)
                resolve_backend(block.depthwise_conv, sparse_conv_backend)
            if len({b.depthwise_conv.kernel_size for b in stage}) > 1:
                raise ValueError(f'Stage {i} mixes depthwise kernel sizes.')

    # ------------------------------------------------------------------
    def make_plans(self, mask: Tensor, img_hw: Tuple[int, int]
                   ) -> List[UnitSparseConvPlan]:
        """Sparse-conv plans of the depthwise conv of every stage.

        Only the visible unit ids are found on the host; each neighbour
        table is built on the model's device when the forward asks for it
        (:class:`.UnitSparseConvPlan`), so host work scales with the units.

        Args:
            mask (Tensor): ``(B, L)`` unit mask, 1 = masked.
            img_hw (tuple[int, int]): Image size.

        Returns:
            list[UnitSparseConvPlan]: One plan per stage, rows in the
            masked path's token order.
        """
        grid = unit_grid(img_hw, self.mask_unit)
        mask = as_unit_mask(mask)
        vis = visible_unit_ids(mask.reshape(mask.shape[0], -1))  # (B, n_vis)
        plans = []
        for i, stage in enumerate(self.stages):
            side = self.unit_sides[i]
            conv = stage[0].depthwise_conv
            plans.append(UnitSparseConvPlan(
                vis, grid[1], int(math.log2(side)),
                (grid[0] * side, grid[1] * side), conv.kernel_size,
                conv.dilation))
        return plans

    def _use_tiles(self, i: int, plan) -> bool:
        """Whether stage ``i`` runs the tiled depthwise forward."""
        if self.sparse_conv_backend != 'auto' or \
                not isinstance(plan, UnitSparseConvPlan):
            return False
        conv = self.stages[i][0].depthwise_conv
        if conv.groups != conv.in_channels or conv.dilation != (1, 1):
            return False
        u = 2**plan.levels
        return all((u + k - 1) <= 2.5 * u for k in conv.kernel_size)

    def forward_masked(self, x: Tensor, mask: Tensor,
                       plans: Optional[List[UnitSparseConvPlan]] = None
                       ) -> Tuple[Tensor]:
        """Visible-tokens-only forward; see :meth:`forward`."""
        if self.gap_before_final_norm:
            raise ValueError(
                'GreenConvNeXt with a mask returns visible tokens, but '
                'gap_before_final_norm=True asks for pooled features; build '
                'it with gap_before_final_norm=False for masked pretraining.')
        mask = as_unit_mask(mask)  # CPU bool, from any array-like
        grid = check_unit_mask(x.shape, mask, self.mask_unit)
        mask = mask.reshape(mask.shape[0], -1)
        if plans is None:
            plans = self.make_plans(mask, x.shape[-2:])
        if len(plans) != self.num_stages:
            raise ValueError(f'Expected {self.num_stages} stage plans, got '
                             f'{len(plans)}.')
        # queue every host-to-device copy first, then build on the device
        vis = to_device(visible_unit_ids(mask), x.device)  # (B, n_vis)
        plans = [p.upload(x.device) if hasattr(p, 'upload') else p
                 for p in plans]
        # tiled forward where a tile holds at most (1 + 6/4)^2 = 6.25x its
        # unit's tokens (unit side >= 4 for a 7x7 kernel: ConvNeXt stages
        # 1-2); there it is several times faster than the 49 per-tap
        # gathers on the CPU, below it the gather conv is faster
        tiles = [p.tiles(x.device) if self._use_tiles(i, p) else None
                 for i, p in enumerate(plans)]
        plans = [p.to(x.device) for p in plans]
        outs = []
        for i, stage in enumerate(self.stages):
            layer = self.downsample_layers[i]
            if i == 0:  # stem: conv, LN
                x = embed_visible_units(layer[0], x, vis, grid,
                                        self.mask_unit)  # (B, N_0, C_0)
                x = token_layer_norm(layer[1], x)
            else:  # LN, 2x2 conv on whole 2x2 cells (Morton runs of 4)
                x = conv_on_cells(layer[1], token_layer_norm(layer[0], x))
            if plans[i].num_tokens != x.shape[0] * x.shape[1]:
                raise ValueError(
                    f'Plan of stage {i} has {plans[i].num_tokens} tokens, '
                    f'the stage {x.shape[0] * x.shape[1]}: plans made for '
                    'another mask or image size.')
            for block in stage:
                x = green_convnext_block(block, x, plans[i],
                                         self.sparse_conv_backend, tiles[i])
            if i in self.out_indices:
                outs.append(token_layer_norm(getattr(self, f'norm{i}'), x))
        return tuple(outs)
