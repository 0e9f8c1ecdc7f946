#!/usr/bin/env python
"""Convert a GreenMIM checkpoint released by the paper's authors.

Their encoder uses the original Swin layout under an ``encoder.`` prefix
(``encoder.layers.N.blocks.M.attn.qkv``, ``encoder.patch_embed.proj``,
``encoder.layers.N.downsample.reduction/norm``, ``encoder.norm``). The output
has mmpretrain ``SwinTransformer`` keys (for ``GreenSwinTransformer`` too):

    python tools/convert_official.py official.pth greenmim_swin_b.pth

Recomputable buffers (``attn_mask``, ``relative_position_index``) are
dropped and the index is rebuilt the mmpretrain way. Decoder weights
(``decoder*``, ``mask_token``) are reported and not converted. Any other key,
or a shape that does not fit, is an error.
"""
import argparse
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

_BLOCK_RULES = [
    (r'norm1\.(weight|bias)', 'norm1.{0}'),
    (r'norm2\.(weight|bias)', 'norm2.{0}'),
    (r'attn\.qkv\.(weight|bias)', 'attn.w_msa.qkv.{0}'),
    (r'attn\.proj\.(weight|bias)', 'attn.w_msa.proj.{0}'),
    (r'attn\.relative_position_bias_table',
     'attn.w_msa.relative_position_bias_table'),
    (r'mlp\.fc1\.(weight|bias)', 'ffn.layers.0.0.{0}'),
    (r'mlp\.fc2\.(weight|bias)', 'ffn.layers.1.{0}'),
]
_DROPPED = (r'attn\.relative_position_index', r'attn_mask')
_DECODER = ('decoder', 'mask_token')


def merge_order_to_unfold(t: torch.Tensor) -> torch.Tensor:
    """Reorder the 4C axis of patch merging from Swin's concat order
    ``[x(0,0), x(1,0), x(0,1), x(1,1)]`` (position-major) to the channel-
    major ``nn.Unfold`` order of mmcv (``c * 4 + 2 * row + col``)."""
    c = t.shape[-1] // 4
    # unfold slot k = 2*row + col  ->  concat position of (row, col)
    src_pos = torch.tensor([0, 2, 1, 3])
    idx = (src_pos[None, :] * c + torch.arange(c)[:, None]).reshape(-1)
    return t[..., idx]


def relative_position_index(window: int) -> torch.Tensor:
    """mmpretrain ``WindowMSA``'s index buffer for a square window."""
    from mmpretrain.models.utils.attention import WindowMSA
    seq = WindowMSA.double_step_seq(2 * window - 1, window, 1, window)
    return (seq + seq.T).flip(1).contiguous()


def convert(state: Dict[str, torch.Tensor]
            ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map official keys to mmpretrain ``SwinTransformer`` keys.

    Args:
        state (dict): The official state dict.

    Returns:
        tuple[dict, list[str]]: The converted state dict and the decoder
        keys that were left out.
    """
    out, skipped, unknown = {}, [], []
    n_stages = 0
    for key, val in state.items():
        if key.startswith(_DECODER):
            skipped.append(key)
            continue
        if not key.startswith('encoder.'):
            unknown.append(key)
            continue
        k = key[len('encoder.'):]
        m = re.fullmatch(r'layers\.(\d+)\.blocks\.(\d+)\.(.+)', k)
        if m:
            stage, block, rest = m.groups()
            n_stages = max(n_stages, int(stage) + 1)
            if any(re.fullmatch(d, rest) for d in _DROPPED):
                continue
            for pat, new in _BLOCK_RULES:
                mm = re.fullmatch(pat, rest)
                if mm:
                    out[f'stages.{stage}.blocks.{block}.' +
                        new.format(*mm.groups())] = val
                    if 'bias_table' in new:
                        window = int(round(val.shape[0]**0.5) + 1) // 2
                        out[f'stages.{stage}.blocks.{block}.attn.w_msa.'
                            'relative_position_index'] = \
                            relative_position_index(window)
                    break
            else:
                unknown.append(key)
            continue
        m = re.fullmatch(r'layers\.(\d+)\.downsample\.(reduction|norm)\.'
                         r'(weight|bias)', k)
        if m:
            stage, part, kind = m.groups()
            n_stages = max(n_stages, int(stage) + 1)
            out[f'stages.{stage}.downsample.{part}.{kind}'] = \
                merge_order_to_unfold(val)
            continue
        m = re.fullmatch(r'patch_embed\.(proj|norm)\.(weight|bias)', k)
        if m:
            part = 'projection' if m.group(1) == 'proj' else 'norm'
            out[f'patch_embed.{part}.{m.group(2)}'] = val
            continue
        m = re.fullmatch(r'norm\.(weight|bias)', k)
        if m:
            out[f'norm__LAST.{m.group(1)}'] = val
            continue
        if k == 'absolute_pos_embed':
            out[k] = val
            continue
        unknown.append(key)
    if unknown:
        raise KeyError(
            f'{len(unknown)} key(s) are not in the official GreenMIM Swin '
            f'layout: {unknown[:8]}. Expected "encoder."-prefixed original '
            'Swin keys.')
    if not out:
        raise KeyError('No encoder weights found (no "encoder." keys).')
    last = n_stages - 1
    out = {k.replace('norm__LAST', f'norm{last}'): v for k, v in out.items()}
    return out, skipped


def check_against(converted: Dict[str, torch.Tensor], arch: str,
                  window: int) -> None:
    """Load strictly into mmpretrain ``SwinTransformer`` (clear errors on a
    missing key or a shape mismatch)."""
    from mmpretrain.models import SwinTransformer
    model = SwinTransformer(arch=arch, window_size=window)
    ref = model.state_dict()
    missing = sorted(set(ref) - set(converted))
    extra = sorted(set(converted) - set(ref))
    shapes = [f'{k}: {tuple(converted[k].shape)} vs {tuple(v.shape)}'
              for k, v in ref.items()
              if k in converted and converted[k].shape != v.shape]
    if missing or extra or shapes:
        raise ValueError(
            f'Converted weights do not fit SwinTransformer(arch={arch!r}, '
            f'window_size={window}): missing {missing[:5]}, unexpected '
            f'{extra[:5]}, shape mismatches {shapes[:5]}.')
    model.load_state_dict(converted, strict=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('src')
    p.add_argument('dst')
    p.add_argument('--arch', default='base',
                   help='Swin arch to check against (tiny/small/base/large)')
    p.add_argument('--window-size', type=int, default=7)
    args = p.parse_args(argv)
    from greenmim_mm.checkpoint import safe_load
    ckpt = safe_load(args.src, map_location='cpu')
    state = ckpt.get('model', ckpt.get('state_dict', ckpt))
    converted, skipped = convert(state)
    check_against(converted, args.arch, args.window_size)
    if skipped:
        print(f'left out {len(skipped)} decoder key(s): {skipped[:4]}...')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': converted}, args.dst)
    print(f'saved {len(converted)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
