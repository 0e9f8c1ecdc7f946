"""Dense Twins (PCPVT, SVT) reference with masked tokens blocked.

Runs an mmpretrain ``PCPVT`` / ``SVT``'s own submodules on the full feature
map. The contract: the PEG (a 3x3 depthwise conv) sees masked neighbours as
zeros (a submanifold conv), global sub-sampled attention takes keys from
visible positions (its sr cells lie inside mask units), locally-grouped
attention blocks masked tokens and padding as keys; every other op is per
token or acts on whole units. Nothing here imports greenmim_mm.
"""
from typing import List, Optional

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones.twins import LocallyGroupedSelfAttention
from torch import Tensor

from .order import pick_tokens, valid_map


def _softmax_blocked(logits: Tensor, allowed: Tensor) -> Tensor:
    return logits.masked_fill(~allowed, float('-inf')).softmax(-1)


def gsa(attn, x: Tensor, valid: Tensor, hw) -> Tensor:
    """mmpretrain ``GlobalSubsampledAttention`` with keys from visible
    positions only. ``x`` (B, N, C), ``valid`` (B, H, W)."""
    assert not attn.v_shortcut
    b, n, c = x.shape
    heads = attn.num_heads
    q = attn.q(x).reshape(b, n, heads, -1).transpose(1, 2)  # (B, h, N, d)
    key_ok = valid.flatten(1)  # (B, N)
    if attn.sr_ratio > 1:
        r = attn.sr_ratio
        fmap = x.transpose(1, 2).reshape(b, c, *hw)  # (B, C, H, W)
        x = attn.norm(attn.sr(fmap).flatten(2).transpose(1, 2))
        key_ok = valid[:, ::r, ::r].flatten(1)  # cells are inside units
    kv = attn.kv(x).reshape(b, -1, 2, heads, attn.head_dims).permute(
        2, 0, 3, 1, 4)  # (2, B, h, N_kv, d)
    logits = q @ kv[0].transpose(-2, -1) * attn.head_dims**-0.5
    allowed = key_ok[:, None, None].expand_as(logits)
    attn_w = _softmax_blocked(logits, allowed)
    out = (attn_w @ kv[1]).transpose(1, 2).reshape(b, n, c)
    return attn.out_drop(attn.proj_drop(attn.proj(out)))


def lsa(attn, x: Tensor, valid: Tensor, hw, padding: str = 'block'
        ) -> Tensor:
    """mmpretrain ``LocallyGroupedSelfAttention`` on the full map with
    masked keys blocked.

    ``padding``: ``'block'`` (the contract: padding is masked), ``'open'``
    (padding attends as zero tokens) or ``'mmpretrain'`` (dense mmpretrain:
    padding blocked only when both sides are padded).
    """
    b, n, c = x.shape
    w, heads = attn.window_size, attn.num_heads
    h, wd = hw
    pad_b, pad_r = (-h) % w, (-wd) % w
    if padding == 'mmpretrain':
        padding = 'block' if pad_b and pad_r else 'open'
    x = F.pad(x.reshape(b, h, wd, c), (0, 0, 0, pad_r, 0, pad_b))
    key_ok = F.pad(valid, (0, pad_r, 0, pad_b), value=padding == 'open')
    hp, wp = x.shape[1:3]
    nh, nw = hp // w, wp // w

    def windows(t):  # (B, Hp, Wp, *rest) -> (B, nh*nw, w*w, *rest)
        rest = t.shape[3:]
        t = t.reshape(b, nh, w, nw, w, *rest).transpose(2, 3)
        return t.reshape(b, nh * nw, w * w, *rest)

    xw, kw = windows(x), windows(key_ok)
    qkv = attn.qkv(xw).reshape(b, nh * nw, w * w, 3, heads,
                               c // heads).permute(3, 0, 1, 4, 2, 5)
    logits = (qkv[0] @ qkv[1].transpose(-2, -1)) * attn.scale
    allowed = kw[:, :, None, None, :] | torch.eye(w * w, dtype=torch.bool)
    attn_w = attn.attn_drop(_softmax_blocked(logits, allowed))
    out = (attn_w @ qkv[2]).transpose(2, 3)  # (B, nW, w², h, d)
    out = out.reshape(b, nh, nw, w, w, c).transpose(2, 3)
    out = out.reshape(b, hp, wp, c)[:, :h, :wd].reshape(b, n, c)
    return attn.proj_drop(attn.proj(out))


def _grid(model, img: Tensor):
    unit = 1
    for pe in model.patch_embeds:
        unit *= pe.projection.stride[0]
    return img.shape[-2] // unit, img.shape[-1] // unit


def twins_reference_maps(model, img: Tensor, mask: Optional[Tensor] = None,
                         padding: str = 'block',
                         block_masked: bool = True) -> List[Tensor]:
    """Dense mmpretrain ``PCPVT``/``SVT`` forward with masked tokens
    blocked (see the module docstring).

    Args:
        model: An mmpretrain ``PCPVT`` or ``SVT``.
        img (Tensor): ``(B, 3, H, W)``.
        mask (Tensor, optional): ``(B, L)`` unit mask, 1 = masked. None:
            nothing masked.
        padding (str): LSA padding, see :func:`lsa`.
        block_masked (bool): False: masked tokens are seen everywhere (a
            broken reference, for negative controls).

    Returns:
        list[Tensor]: ``(B, C_i, H_i, W_i)`` per out index.
    """
    grid = _grid(model, img)
    b = img.shape[0]
    x, outs = img, []
    for i in range(model.num_stage):
        x, hw = model.patch_embeds[i](x)  # (B, H*W, C)
        if mask is None or not block_masked:
            valid = torch.ones(b, *hw, dtype=torch.bool)
        else:
            valid = valid_map(mask, grid, hw[0] // grid[0])  # (B, H, W)
        x = model.position_encoding_drops[i](x)
        for j, layer in enumerate(model.stages[i]):
            y = layer.norm1(x)
            if isinstance(layer.attn, LocallyGroupedSelfAttention):
                y = lsa(layer.attn, y, valid, hw, padding)
            else:
                y = gsa(layer.attn, y, valid, hw)
            x = x + layer.drop_path(y)
            x = x + layer.drop_path(layer.ffn(layer.norm2(x)))
            if j == 0:  # PEG: depthwise conv seeing masked tokens as 0
                peg = model.position_encodings[i]
                assert peg.stride == 1
                fmap = x.transpose(1, 2).reshape(b, -1, *hw)
                seen = fmap * valid[:, None]
                x = (peg.proj(seen) + fmap).flatten(2).transpose(1, 2)
        x = getattr(model, f'norm_after_stage{i}')(x)
        x = x.transpose(1, 2).reshape(b, -1, *hw)  # (B, C, H, W)
        if i in model.out_indices:
            outs.append(x)
    return outs


def twins_reference(model, img: Tensor, mask: Tensor, order: str = 'morton',
                    **kwargs) -> List[Tensor]:
    """Visible tokens of :func:`twins_reference_maps` in the contract
    order: ``(B, N_i, C_i)`` per out index."""
    maps = twins_reference_maps(model, img, mask, **kwargs)
    grid = _grid(model, img)
    return [pick_tokens(m, mask, grid, order) for m in maps]
