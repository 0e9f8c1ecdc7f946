"""Group Window Attention: gather, attend, scatter (no planning here)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bias_gather import blocking_bias, gather_bias
from .grouping import GroupPlan


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
        qkv = qkv.new_zeros(n_groups * g, 3 * c).index_copy_(
            0, plan.token_slot, qkv)
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
        out = out.index_select(0, plan.token_slot)  # (B*N, C)
    out = w_msa.proj(out.view(b, n, c))
    return w_msa.proj_drop(out)
