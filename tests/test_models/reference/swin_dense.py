"""Dense Swin reference with masked tokens and padding blocked as keys.

Runs an mmpretrain ``SwinTransformer``'s own submodules (patch embed, norms,
qkv/proj linears, FFNs, mmcv ``PatchMerging``) on the full feature map, with
its own window partition, cyclic shift, region labels and relative-position
index. Masked tokens never reach a visible one: they are blocked as keys,
every other op is per token or acts on whole mask units. Nothing here
imports greenmim_mm.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor

from .order import pick_tokens, valid_map


def own_relative_position_index(window: int) -> Tensor:
    """``(w², w²)`` bias-table row of every (query, key) pair of a window:
    ``(dr + w - 1) * (2w - 1) + (dc + w - 1)`` with ``d = query - key``."""
    r, c = torch.meshgrid(torch.arange(window), torch.arange(window),
                          indexing='ij')
    r, c = r.flatten(), c.flatten()
    dr = r[:, None] - r[None, :] + window - 1
    dc = c[:, None] - c[None, :] + window - 1
    return dr * (2 * window - 1) + dc


def swin_shift(hw: Tuple[int, int], window: int, shift: int,
               pad_small_map: bool) -> int:
    """mmpretrain's rule: a map whose short side equals the window is not
    shifted unless ``pad_small_map``; a smaller map needs
    ``pad_small_map`` (then it keeps its shift). Without it, the contract
    treats the small map as one window: no shift."""
    if min(hw) <= window and not pad_small_map:
        return 0
    return shift


def _partition(t: Tensor, w: int) -> Tensor:
    """``(B, Hp, Wp, *rest)`` -> ``(B, nWh * nWw, w * w, *rest)``."""
    b, hp, wp = t.shape[:3]
    rest = t.shape[3:]
    t = t.reshape(b, hp // w, w, wp // w, w, *rest)
    t = t.transpose(2, 3)  # (B, nWh, nWw, w, w, *rest)
    return t.reshape(b, (hp // w) * (wp // w), w * w, *rest)


def _unpartition(t: Tensor, hp: int, wp: int, w: int) -> Tensor:
    """Inverse of :func:`_partition`."""
    b = t.shape[0]
    rest = t.shape[3:]
    t = t.reshape(b, hp // w, wp // w, w, w, *rest).transpose(2, 3)
    return t.reshape(b, hp, wp, *rest)


def _regions(n: int, window: int, shift: int) -> Tensor:
    """``(n,)`` region of each row (or column) of a padded map rolled by
    ``-shift``: the last ``shift`` rows wrapped around from the top and
    the ``window - shift`` rows before them are separate regions."""
    i = torch.arange(n)
    return (i >= n - window).long() + (i >= n - shift).long()


def window_attention(w_msa, x: Tensor, valid: Optional[Tensor], window: int,
                     shift: int, block_padding: bool = True) -> Tensor:
    """mmpretrain ``WindowMSA`` weights on shifted windows of a full map.

    Args:
        w_msa: mmpretrain ``WindowMSA``.
        x (Tensor): ``(B, H, W, C)``.
        valid (Tensor, optional): ``(B, H, W)`` bool, False = masked
            (blocked as a key). None: all visible.
        window (int): Window size.
        shift (int): Effective shift.
        block_padding (bool): Block padding as keys (the contract); False
            lets the zero padding in, as dense mmpretrain does.

    Returns:
        Tensor: ``(B, H, W, C)``.
    """
    b, h, w, c = x.shape
    if valid is None:
        valid = torch.ones(b, h, w, dtype=torch.bool)
    pad_b, pad_r = (-h) % window, (-w) % window
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))  # (B, Hp, Wp, C)
    key_ok = F.pad(valid, (0, pad_r, 0, pad_b), value=not block_padding)
    hp, wp = x.shape[1:3]
    region = torch.zeros(hp, wp, dtype=torch.long)
    if shift:
        x = torch.roll(x, (-shift, -shift), (1, 2))
        key_ok = torch.roll(key_ok, (-shift, -shift), (1, 2))
        region = _regions(hp, window, shift)[:, None] * 3 + \
            _regions(wp, window, shift)[None, :]
    xw = _partition(x, window)  # (B, nW, w², C)
    kw = _partition(key_ok, window)  # (B, nW, w²)
    rw = _partition(region[None], window)[0]  # (nW, w²)
    nw = xw.shape[1]
    heads = w_msa.num_heads
    # (B, nW, w², 3C) -> (3, B, nW, heads, w², C/heads)
    qkv = w_msa.qkv(xw).reshape(b, nw, window**2, 3, heads,
                                c // heads).permute(3, 0, 1, 4, 2, 5)
    logits = (qkv[0] * w_msa.scale) @ qkv[1].transpose(-2, -1)
    idx = own_relative_position_index(window).to(x.device)
    bias = w_msa.relative_position_bias_table[idx]  # (w², w², heads)
    logits = logits + bias.permute(2, 0, 1)
    allowed = (rw[:, :, None] == rw[:, None, :])[None] & kw[:, :, None, :]
    allowed = allowed | torch.eye(window**2, dtype=torch.bool)  # no empty row
    logits = logits.masked_fill(~allowed[:, :, None], float('-inf'))
    attn = w_msa.attn_drop(logits.softmax(-1))
    out = (attn @ qkv[2]).transpose(2, 3).reshape(b, nw, window**2, c)
    out = w_msa.proj_drop(w_msa.proj(out))
    out = _unpartition(out, hp, wp, window)  # (B, Hp, Wp, C)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    return out[:, :h, :w]


def swin_reference_maps(model, img: Tensor, mask: Optional[Tensor] = None,
                        block_padding: bool = True,
                        block_masked: bool = True) -> List[Tensor]:
    """Dense mmpretrain ``SwinTransformer`` forward on the full map, with
    masked tokens (and, by default, padding) blocked as keys.

    Args:
        model: An mmpretrain ``SwinTransformer`` (any subclass).
        img (Tensor): ``(B, 3, H, W)``.
        mask (Tensor, optional): ``(B, L)`` unit mask, 1 = masked, over
            units of the final stride. None: nothing masked.
        block_padding (bool): See :func:`window_attention`.
        block_masked (bool): False lets masked tokens in as keys (a
            broken reference, for negative controls).

    Returns:
        list[Tensor]: ``(B, C_i, H_i, W_i)`` per out index.
    """
    x, hw = model.patch_embed(img)  # (B, H0*W0, C)
    b = x.shape[0]
    if mask is None or not block_masked:
        valid = torch.ones(b, *hw, dtype=torch.bool)
    else:
        grid = _grid(model, img)
        valid = valid_map(mask, grid, hw[0] // grid[0])  # (B, H0, W0)
    if model.use_abs_pos_embed:
        x = x + resize_pos_embed(model.absolute_pos_embed,
                                 model.patch_resolution, hw,
                                 model.interpolate_mode,
                                 model.num_extra_tokens)
    x = model.drop_after_pos(x)
    outs = []

    def merge(x, hw, valid):
        x, hw = stage.downsample(x, hw)  # mmcv PatchMerging, dense
        return x, hw, valid[:, ::2, ::2]

    for i, stage in enumerate(model.stages):
        for blk in stage.blocks:
            attn = blk.attn
            shift = swin_shift(hw, attn.window_size, attn.shift_size,
                               attn.pad_small_map)
            y = blk.norm1(x).reshape(b, *hw, -1)  # (B, H, W, C)
            y = window_attention(attn.w_msa, y, valid, attn.window_size,
                                 shift, block_padding)
            x = attn.drop(y.reshape(x.shape)) + x
            x = blk.ffn(blk.norm2(x), identity=x)
        if stage.downsample is not None and model.out_after_downsample:
            x, hw, valid = merge(x, hw, valid)
        if i in model.out_indices:
            out = getattr(model, f'norm{i}')(x)
            outs.append(out.reshape(b, *hw, -1).permute(0, 3, 1, 2))
        if stage.downsample is not None and not model.out_after_downsample:
            x, hw, valid = merge(x, hw, valid)
    return outs


def swin_reference(model, img: Tensor, mask: Tensor, order: str = 'morton',
                   **kwargs) -> List[Tensor]:
    """Visible tokens of :func:`swin_reference_maps` in the contract order:
    ``(B, N_i, C_i)`` per out index (``order='row'`` for a wrong order)."""
    maps = swin_reference_maps(model, img, mask, **kwargs)
    grid = _grid(model, img)
    return [pick_tokens(m, mask, grid, order) for m in maps]


def _grid(model, img: Tensor) -> Tuple[int, int]:
    """Unit grid: units are the final stride (patch * 2 ** (stages-1))."""
    patch = model.patch_embed.projection.stride[0]
    unit = patch * 2**(len(model.stages) - 1)
    return img.shape[-2] // unit, img.shape[-1] // unit
