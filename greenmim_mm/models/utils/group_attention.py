"""Group Window Attention: gather, attend, scatter (no planning here)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bias_gather import blocking_bias, gather_bias
from .grouping import GroupPlan


class _ToSlots(torch.autograd.Function):
    """Rows of ``src`` placed at ``index`` of a zero ``(rows, C)`` tensor;
    ``index`` holds distinct rows.

    ``new_zeros().index_copy_()`` computes the same, but its autograd
    formula saves ``src`` (for ``expand_as``): a full ``(B*N, 3C)`` qkv per
    block, kept until the backward. Here only the plan's index is kept, and
    the backward is a gather.
    """

    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor, rows: int) -> Tensor:
        ctx.index = index
        return src.new_zeros(rows, src.shape[1]).index_copy_(0, index, src)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad.index_select(0, ctx.index), None, None


class _FromSlots(torch.autograd.Function):
    """``src[index]`` for distinct ``index`` rows; the backward places the
    gradient rows back with a copy, not the accumulating ``index_add_`` of
    ``index_select``'s backward (non-deterministic on CUDA)."""

    @staticmethod
    def forward(ctx, src: Tensor, index: Tensor) -> Tensor:
        ctx.index, ctx.rows = index, src.shape[0]
        return src.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        out = grad.new_zeros(ctx.rows, grad.shape[1])
        return out.index_copy_(0, ctx.index, grad), None


def group_window_attention(w_msa: nn.Module, x: Tensor,
                           plan: GroupPlan) -> Tensor:
    """Windowed self-attention over the visible tokens only.

    Uses the weights of an mmpretrain ``WindowMSA`` (``qkv``, ``proj``,
    ``relative_position_bias_table``, ``scale``) so state-dict keys stay the
    same. Linear layers run on unpadded tokens; padding exists only inside
    the attention call. A module without ``relative_position_bias_table``
    (e.g. Twins' ``LocallyGroupedSelfAttention``) gets the blocking mask
    only, no bias.

    Args:
        w_msa (nn.Module): An mmpretrain ``WindowMSA``, or any module with
            ``qkv``, ``proj``, ``num_heads``, ``scale``, ``attn_drop`` and
            ``proj_drop``.
        x (Tensor): ``(B, N, C)`` normalised visible tokens.
        plan (GroupPlan): Grouping of the tokens.

    Returns:
        Tensor: ``(B, N, C)`` attention output, after the projection.
    """
    b, n, c = x.shape
    heads = w_msa.num_heads
    g, n_groups = plan.group_size, plan.num_groups
    qkv = w_msa.qkv(x).reshape(b * n, 3 * c)  # (B*N, 3C)
    if not plan.identity:
        # (B*N, 3C) -> (G*g, 3C), padded slots are zero
        qkv = _ToSlots.apply(qkv, plan.token_slot, n_groups * g)
    # (G*g, 3C) -> (3, G, heads, g, C/heads)
    qkv = qkv.view(n_groups, g, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    table = getattr(w_msa, 'relative_position_bias_table', None)
    if table is not None:
        bias = gather_bias(table, plan, q.dtype)  # one copy, aligned
    elif plan.identity:
        bias = None  # one window per group, no padding: nothing to block
    else:  # no position bias (e.g. Twins' LSA): blocking only
        bias = blocking_bias(plan, q.dtype)  # (G, 1, g, g), shared
    drop = w_msa.attn_drop.p if w_msa.training else 0.0
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, dropout_p=drop, scale=w_msa.scale)
    out = out.transpose(1, 2).reshape(n_groups * g, c)  # (G*g, C)
    if not plan.identity:
        out = _FromSlots.apply(out, plan.token_slot)  # (B*N, C)
    out = w_msa.proj(out.view(b, n, c))
    return w_msa.proj_drop(out)
