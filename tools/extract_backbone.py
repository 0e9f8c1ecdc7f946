#!/usr/bin/env python
"""Extract the backbone of a GreenMIM pretraining checkpoint.

The output holds tensors only (plus a small meta dict of strings), so it
loads with ``torch.load(..., weights_only=True)`` and strictly into
mmpretrain's ``SwinTransformer``:

    python tools/extract_backbone.py work_dirs/demo/epoch_20.pth swin_t.pth
    # then: init_cfg=dict(type='Pretrained', checkpoint='swin_t.pth')

The output is never the input (the same path, or a hard or symbolic link to
it, is refused) and is written through a temporary file then renamed, so
an interrupted run leaves no half-written file. SimMIM's ``mask_token``
(``backbone.mask_token`` of mmpretrain's ``SimMIMSwinTransformer``) is not
part of a plain ``SwinTransformer``: it is dropped with a warning.
"""
import argparse
import os.path as osp
import sys
import warnings

import torch

#: backbone keys a pretraining algorithm adds to the plain backbone
PRETRAIN_ONLY_KEYS = ('mask_token', )

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def extract(state: dict, prefix: str = 'backbone.',
            keep_prefix: bool = False) -> dict:
    """Keep the ``prefix`` entries of a state dict.

    Args:
        state (dict): Full model state dict.
        prefix (str): Prefix of the backbone. Defaults to 'backbone.'.
        keep_prefix (bool): Keep the prefix in the keys. Defaults to False.

    Keys of :data:`PRETRAIN_ONLY_KEYS` (SimMIM's ``mask_token``) are
    dropped with a warning naming them.

    Returns:
        dict: Backbone tensors.
    """
    bad = [k for k, v in state.items()
           if k.startswith(prefix) and not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f'Non-tensor entries in the backbone: {bad[:5]}')
    out = {(k if keep_prefix else k[len(prefix):]): v.detach().clone()
           for k, v in state.items() if k.startswith(prefix)}
    if not out:
        heads = sorted({k.split('.')[0] for k in state})
        raise KeyError(f'No "{prefix}" weights in this checkpoint; its top '
                       f'level modules are {heads}. Is it a GreenMIM '
                       'pretraining checkpoint?')
    dropped = [prefix + k for k in PRETRAIN_ONLY_KEYS if prefix + k in state]
    for key in dropped:
        out.pop(key if keep_prefix else key[len(prefix):])
    if dropped:
        warnings.warn(
            f'Dropped {dropped} from the backbone: a pretraining-only '
            "parameter (SimMIM's mask token) that a plain SwinTransformer "
            'does not have.', stacklevel=2)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('src', help='pretraining checkpoint (Runner .pth)')
    p.add_argument('dst', help='output backbone checkpoint')
    p.add_argument('--prefix', default='backbone.')
    p.add_argument('--keep-prefix', action='store_true',
                   help="keep 'backbone.' in the keys (then load with "
                   "prefix='backbone.')")
    args = p.parse_args(argv)
    from greenmim_mm.checkpoint import safe_load
    from greenmim_mm.utils_io import atomic_write, refuse_same_file
    refuse_same_file(args.src, args.dst)
    ckpt = safe_load(args.src, map_location='cpu')
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise TypeError(f'{args.src} holds no state dict.')
    backbone = extract(state, args.prefix, args.keep_prefix)
    meta = {'source': osp.basename(args.src), 'prefix_kept':
            str(args.keep_prefix)}
    if isinstance(ckpt.get('meta'), dict):
        for k in ('epoch', 'iter', 'mmengine_version'):
            if k in ckpt['meta']:
                meta[k] = str(ckpt['meta'][k])
    with atomic_write(args.dst) as tmp:
        torch.save({'state_dict': backbone, 'meta': meta}, tmp)
    print(f'saved {len(backbone)} backbone tensors to {args.dst}')


if __name__ == '__main__':
    try:
        main()
    except Exception as e:  # one clear line, non-zero exit
        sys.exit(f'{type(e).__name__}: {e}')
