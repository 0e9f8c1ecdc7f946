"""Group Window Attention: gather, attend, scatter (no planning here)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .grouping import GroupPlan


def extended_bias_table(table: Tensor) -> Tensor:
    """Append the "blocked" row (-inf) to a relative position bias table.

    Args:
        table (Tensor): ``((2w-1)**2, heads)`` bias table.

    Returns:
        Tensor: ``((2w-1)**2 + 1, heads)``.
    """
    blocked = table.new_full((1, table.shape[1]), float('-inf'))
    return torch.cat([table, blocked], dim=0)


def group_window_attention(w_msa: nn.Module, x: Tensor,
                           plan: GroupPlan) -> Tensor:
    """Windowed self-attention over the visible tokens only.

    Uses the weights of an mmpretrain ``WindowMSA`` (``qkv``, ``proj``,
    ``relative_position_bias_table``, ``scale``) so state-dict keys stay the
    same. Linear layers run on unpadded tokens; padding exists only inside
    the attention call.

    Args:
        w_msa (nn.Module): An mmpretrain ``WindowMSA``.
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
        qkv = qkv.new_zeros(n_groups * g, 3 * c).index_copy(
            0, plan.token_slot, qkv)
    # (G*g, 3C) -> (3, G, heads, g, C/heads)
    qkv = qkv.view(n_groups, g, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    table = extended_bias_table(w_msa.relative_position_bias_table)
    # (G, g, g, heads) -> (G, heads, g, g)
    bias = table[plan.rel_index].permute(0, 3, 1, 2).to(q.dtype)
    drop = w_msa.attn_drop.p if w_msa.training else 0.0
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, dropout_p=drop, scale=w_msa.scale)
    out = out.transpose(1, 2).reshape(n_groups * g, c)  # (G*g, C)
    if not plan.identity:
        out = out.index_select(0, plan.token_slot)  # (B*N, C)
    out = w_msa.proj(out.view(b, n, c))
    return w_msa.proj_drop(out)
