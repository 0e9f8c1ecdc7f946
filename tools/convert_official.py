#!/usr/bin/env python
"""Convert a GreenMIM Swin checkpoint of the paper's authors to mmpretrain.

Reads every form the authors' code (https://github.com/LayneH/GreenMIM)
writes, with :func:`greenmim_mm.checkpoint.safe_load`:

* a released model, ``{'model': state_dict}``;
* a raw training checkpoint of their ``main_pretrain.py``
  (``model``, ``optimizer``, ``scaler``, ``epoch`` and ``args``, an
  ``argparse.Namespace``); only ``model`` is converted, and ``args.model``
  must agree with the weights;
* the output of their ``util/extract_backbone.py``: the bare encoder state
  dict (no ``encoder.`` prefix, no ``relative_position_index``).

The encoder uses the original Swin key names (``layers.N.blocks.M.attn.qkv``,
``patch_embed.proj``, ``layers.N.downsample.reduction/norm``, ``norm``); the
output has mmpretrain ``SwinTransformer`` keys (those of
``GreenSwinTransformer`` too).

Patch merging concatenates each 2x2 group of tokens before its LayerNorm and
linear layer, and the authors' code has used two orders. The code the
released models were trained with (``models_swin.py``, May 2022; the
download links have not changed since) concatenates row-first,
``(0,0), (0,1), (1,0), (1,1)`` (``--merge-order row``); their refactored
``modeling/`` code, since commit b981012 (2023-01-16, "fix misalignment in
PatchMerging"), uses Swin's ``(0,0), (1,0), (0,1), (1,1)``
(``--merge-order swin``). The default, ``auto``, takes the order from the
model name in a raw checkpoint's ``args`` (``..._dec5121b1``: 2022,
``..._dec512b1``: 2023) and otherwise assumes a released model (row). Either
way the 4C axis is rewritten into mmcv's ``nn.Unfold`` order, so the
mmpretrain model computes what the pretrained encoder computed. The model is detected from the
shapes and named: the released Swin-B window 7, Swin-B window 14 and Swin-L
window 14. The authors' Swin clips a window to a feature map no larger than
it, so their w14 models use window 7 in the last stage (13x13 bias tables
for a 7x7 map at 224 px); the output loads strictly into mmpretrain
``SwinTransformer(window_size=14, stage_cfgs=[{}, {}, {}, dict(
window_size=7)])``, as in our shipped w14 configs. The authors' LayerNorms
use eps 1e-6 (mmpretrain's Swin: 1e-5); every shipped full-size Swin config
sets 1e-6. Usage::

    python tools/convert_official.py official.pth converted.pth \\
        [--model swin-large-w14] [--prefix backbone.] [--merge-order row]

``--prefix backbone.`` writes the keys as our fine-tune and detection
configs load them (``init_cfg=dict(type='Pretrained', prefix='backbone.')``);
without it the keys are bare, for a plain ``SwinTransformer``. Recomputable
buffers (``attn_mask``, ``relative_position_index``) are rebuilt the
mmpretrain way; decoder weights (``decoder*``, ``mask_token``) are reported
and left out. Any other key, a model other than ``--model``, or a shape that
does not fit is an error naming the file. The input is never overwritten and
the output is written through a temporary file.
"""
import argparse
import os.path as osp
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

#: The authors' LayerNorm eps (``partial(nn.LayerNorm, eps=1e-6)``).
PAPER_LN_EPS = 1e-6

#: mmpretrain's ``SwinTransformer.arch_zoo`` settings of the released sizes
#: (not imported: the tool loads mmpretrain only when it needs a model)
_ARCHS = {
    'base': dict(embed_dims=128, depths=(2, 2, 18, 2),
                 num_heads=(4, 8, 16, 32)),
    'large': dict(embed_dims=192, depths=(2, 2, 18, 2),
                  num_heads=(6, 12, 24, 48)),
}
#: side of the last-stage map at 224 px, to which the authors' Swin clips
#: larger windows
_LAST_MAP = 224 // 32


def _released(arch: str, window: int) -> Dict[str, Any]:
    """A released model: the authors' model name (2023 and 2022 code),
    mmpretrain arch, window per stage at 224 px, and the shipped configs
    that load it."""
    win = '' if window == 7 else f'_win{window}'
    ours = f'swin-{arch}-w{window}'
    return dict(
        paper=f'green_mim_swin_{arch}_patch4{win}_dec512b1',
        paper_2022=f'green_mim_swin_{arch}_patch4{win}_dec5121b1',
        arch=arch, **_ARCHS[arch],
        windows=(window, ) * 3 + (min(window, _LAST_MAP), ),
        finetune=f'configs/benchmarks/greenmim_{ours}_8xb256-amp-coslr-100e_'
        'in1k.py',
        detection=f'configs/mmdet/mask-rcnn_greenmim-{ours}_fpn_1x_coco.py')


#: The released models, by our name (``swin-base-w7``, ...).
RELEASED = {f'swin-{arch}-w{window}': _released(arch, window)
            for arch, window in [('base', 7), ('base', 14), ('large', 14)]}

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
_DROPPED = (r'attn\.relative_position_index', r'attn_mask',
            r'attn\.relative_coords_table')
_DECODER = ('decoder', 'mask_token')


class ConvertError(ValueError):
    """The file is not a GreenMIM Swin checkpoint of the authors, or not
    the model asked for."""


#: Concat position of the token ``(row, col)`` of a 2x2 group, listed by
#: mmcv unfold slot ``k = 2 * row + col``, for each merge order.
MERGE_ORDERS = {'swin': (0, 2, 1, 3), 'row': (0, 1, 2, 3)}


def merge_order_to_unfold(t: torch.Tensor,
                          order: str = 'swin') -> torch.Tensor:
    """Reorder the 4C axis of patch merging from a position-major concat
    order to the channel-major ``nn.Unfold`` order of mmcv
    (``c * 4 + 2 * row + col``).

    Args:
        t (torch.Tensor): Weight or norm parameter, 4C on the last axis.
        order (str): ``'swin'``: ``[x(0,0), x(1,0), x(0,1), x(1,1)]``;
            ``'row'``: ``[x(0,0), x(0,1), x(1,0), x(1,1)]`` (the authors'
            2022 code). Defaults to 'swin'.

    Returns:
        torch.Tensor: The reordered tensor.
    """
    if order not in MERGE_ORDERS:
        raise ValueError(f'Unknown merge order {order!r}; choose one of '
                         f'{sorted(MERGE_ORDERS)}.')
    c = t.shape[-1] // 4
    # unfold slot k = 2*row + col  ->  concat position of (row, col)
    src_pos = torch.tensor(MERGE_ORDERS[order])
    idx = (src_pos[None, :] * c + torch.arange(c)[:, None]).reshape(-1)
    return t[..., idx]


def relative_position_index(window: int) -> torch.Tensor:
    """mmpretrain ``WindowMSA``'s index buffer for a square window."""
    from mmpretrain.models.utils.attention import WindowMSA
    seq = WindowMSA.double_step_seq(2 * window - 1, window, 1, window)
    return (seq + seq.T).flip(1).contiguous()


def read_official(path: str) -> Tuple[Dict[str, torch.Tensor], str,
                                      Optional[str]]:
    """Load a checkpoint of the authors and find its model state dict.

    Args:
        path (str): The checkpoint file.

    Returns:
        tuple[dict, str, str | None]: The state dict, a description of the
        file's form, and the model name its ``args`` give (raw training
        checkpoints only).

    Raises:
        ConvertError: If the file holds none of the authors' forms.
        CheckpointLoadError: If the file cannot be read safely.
    """
    from greenmim_mm.checkpoint import safe_load
    ckpt = safe_load(path, map_location='cpu')
    if not isinstance(ckpt, dict) or not ckpt:
        raise ConvertError(f'{path}: holds a {type(ckpt).__name__}, not a '
                           "checkpoint dict of the authors' code.")
    if 'model' in ckpt:
        state = ckpt['model']
        if not isinstance(state, dict):
            raise ConvertError(f'{path}: "model" is a {type(state).__name__}'
                               ', not a state dict.')
        others = sorted(set(ckpt) - {'model'})
        if not others:
            return state, 'released model ({"model": ...})', None
        args = ckpt.get('args')
        name = getattr(args, 'model', None) if isinstance(
            args, argparse.Namespace) else None
        return state, (f'raw training checkpoint (epoch {ckpt.get("epoch")}'
                       f', also holds {others})'), name
    if 'state_dict' in ckpt:
        keys = list(ckpt['state_dict'])[:3] if isinstance(
            ckpt['state_dict'], dict) else []
        raise ConvertError(
            f'{path}: an mmengine checkpoint ("state_dict", keys like '
            f'{keys}), not the authors\' layout; a GreenMIM checkpoint of '
            'this repository needs no conversion (tools/extract_backbone.py '
            'extracts its backbone).')
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        if any(str(k).startswith('encoder.') for k in ckpt):
            return ckpt, 'bare model state dict', None
        return ckpt, "encoder state dict (the authors' extract_backbone.py)", \
            None
    raise ConvertError(
        f'{path}: not a checkpoint of the authors\' code: expected '
        '{"model": state_dict}, their training checkpoint, or the output of '
        f'their extract_backbone.py; got keys {sorted(map(str, ckpt))[:8]}.')


def convert(state: Dict[str, torch.Tensor], merge_order: str = 'swin'
            ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Map the authors' Swin keys to mmpretrain ``SwinTransformer`` keys.

    Args:
        state (dict): The authors' state dict: the whole model
            (``encoder.``-prefixed encoder, decoder) or the bare encoder.
        merge_order (str): Patch-merging concat order of the checkpoint,
            see :func:`merge_order_to_unfold`. Defaults to 'swin'.

    Returns:
        tuple[dict, list[str]]: The converted state dict and the decoder
        keys that were left out.

    Raises:
        KeyError: If a key is not in the authors' Swin layout.
    """
    prefixed = any(k.startswith('encoder.') for k in state)
    if not prefixed and any(k.startswith(('stages.', 'backbone.'))
                            for k in state):
        raise KeyError('Keys like "stages.*"/"backbone.*" are already in the '
                       'mmpretrain layout; this file needs no conversion.')
    out, skipped, unknown = {}, [], []
    n_stages = 0
    for key, val in state.items():
        if key.startswith(_DECODER):
            skipped.append(key)
            continue
        if prefixed and not key.startswith('encoder.'):
            unknown.append(key)
            continue
        k = key[len('encoder.'):] if prefixed else key
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
                merge_order_to_unfold(val, merge_order)
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
            f'layout: {unknown[:8]}. Expected original Swin keys '
            '(patch_embed.proj, layers.N.blocks.M.attn.qkv, ...), bare or '
            'under "encoder.".')
    if not out:
        raise KeyError('No encoder weights found (no "encoder." or Swin '
                       'keys).')
    from greenmim_mm.models.backbones.bias_resize import bias_table_window
    for key in [k for k in out if k.endswith('relative_position_bias_table')]:
        window = bias_table_window(out[key].shape, key)
        out[key[:-len('bias_table')] + 'index'] = \
            relative_position_index(window)
    last = n_stages - 1
    out = {k.replace('norm__LAST', f'norm{last}'): v for k, v in out.items()}
    return out, skipped


def detect(converted: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """The Swin geometry of converted weights, from their shapes.

    Args:
        converted (dict): Output of :func:`convert`.

    Returns:
        dict: ``embed_dims``, ``depths``, ``num_heads``, ``windows`` (per
        stage), ``patch_size``, ``abs_pos`` and ``name`` (the released
        model it is, or None).

    Raises:
        KeyError: If a part is missing.
        ValueError: If blocks of one stage disagree (heads or window).
    """
    from greenmim_mm.models.backbones.bias_resize import bias_table_window
    proj = converted.get('patch_embed.projection.weight')
    if proj is None or proj.dim() != 4:
        raise KeyError('No patch embedding (patch_embed.proj.weight).')
    blocks: Dict[int, Dict[int, Tuple[int, int]]] = {}
    for k, v in converted.items():
        m = re.fullmatch(r'stages\.(\d+)\.blocks\.(\d+)\.attn\.w_msa\.'
                         r'relative_position_bias_table', k)
        if m:
            blocks.setdefault(int(m.group(1)), {})[int(m.group(2))] = (
                v.shape[1], bias_table_window(v.shape, k))
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise KeyError(f'Stages {sorted(blocks)} are not 0..N-1.')
    depths, heads, windows = [], [], []
    for s in range(len(blocks)):
        b = blocks[s]
        if sorted(b) != list(range(len(b))):
            raise KeyError(f'Stage {s} has blocks {sorted(b)}.')
        if len(set(b.values())) != 1:
            raise ValueError(f'Blocks of stage {s} disagree on (heads, '
                             f'window): {sorted(set(b.values()))}.')
        depths.append(len(b))
        heads.append(b[0][0])
        windows.append(b[0][1])
    geo = dict(embed_dims=proj.shape[0], depths=tuple(depths),
               num_heads=tuple(heads), windows=tuple(windows),
               patch_size=proj.shape[-1],
               abs_pos='absolute_pos_embed' in converted, name=None)
    for name, spec in RELEASED.items():
        if all(geo[k] == spec[k] for k in ('embed_dims', 'depths',
                                            'num_heads', 'windows')) \
                and geo['patch_size'] == 4 and not geo['abs_pos']:
            geo['name'] = name
    return geo


def describe(geo: Dict[str, Any]) -> str:
    """A one-line description of a detected geometry."""
    what = (f'Swin embed_dims={geo["embed_dims"]}, depths='
            f'{list(geo["depths"])}, heads={list(geo["num_heads"])}, '
            f'windows per stage={list(geo["windows"])}')
    if geo['name']:
        return f'{geo["name"]} ({RELEASED[geo["name"]]["paper"]}: {what})'
    return f'a Swin that is none of the released models ({what})'


def build_model(geo: Dict[str, Any], eps: float = PAPER_LN_EPS
                ) -> torch.nn.Module:
    """mmpretrain ``SwinTransformer`` of a detected geometry, with per-stage
    windows and the authors' LayerNorm eps.

    Args:
        geo (dict): Output of :func:`detect`.
        eps (float): LayerNorm eps. Defaults to :data:`PAPER_LN_EPS`.

    Returns:
        nn.Module: The model.
    """
    from mmpretrain.models import SwinTransformer
    ln = dict(type='LN', eps=eps)
    arch = dict(embed_dims=geo['embed_dims'], depths=list(geo['depths']),
                num_heads=list(geo['num_heads']))
    n = len(geo['depths'])
    return SwinTransformer(
        arch=arch, img_size=224, patch_size=geo['patch_size'],
        window_size=geo['windows'][0], out_indices=(n - 1, ),
        use_abs_pos_embed=geo['abs_pos'], norm_cfg=ln,
        patch_cfg=dict(norm_cfg=ln),
        stage_cfgs=[dict(window_size=w, block_cfgs=dict(norm_cfg=ln),
                         downsample_cfg=dict(norm_cfg=ln))
                    for w in geo['windows']])


def check_against(converted: Dict[str, torch.Tensor],
                  model: torch.nn.Module) -> None:
    """Load strictly into ``model`` (an mmpretrain ``SwinTransformer``),
    with clear errors on a missing key, a shape mismatch or an index buffer
    that differs from the model's."""
    ref = model.state_dict()
    missing = sorted(set(ref) - set(converted))
    extra = sorted(set(converted) - set(ref))
    shapes = [f'{k}: {tuple(converted[k].shape)} vs {tuple(v.shape)}'
              for k, v in ref.items()
              if k in converted and converted[k].shape != v.shape]
    if missing or extra or shapes:
        raise ValueError(
            f'Converted weights do not fit {type(model).__name__}: missing '
            f'{missing[:5]}, unexpected {extra[:5]}, shape mismatches '
            f'{shapes[:5]}.')
    bad = [k for k, v in ref.items() if k.endswith('relative_position_index')
           and not torch.equal(converted[k], v)]
    if bad:
        raise ValueError(f'relative_position_index differs from the '
                         f'model\'s: {bad[:3]}.')
    model.load_state_dict(converted, strict=True)


def convert_file(src: str, dst: str, model: str = 'auto',
                 prefix: str = '', merge_order: str = 'auto'
                 ) -> Dict[str, Any]:
    """Convert ``src`` to ``dst``; see the module docstring.

    Args:
        src (str): The authors' checkpoint.
        dst (str): Output file (``{'state_dict': ..., 'meta': ...}``).
        model (str): ``'auto'`` or a key of :data:`RELEASED` that the file
            must hold. Defaults to 'auto'.
        prefix (str): Prefix of the output keys, e.g. ``'backbone.'``.
            Defaults to '' (bare mmpretrain keys).
        merge_order (str): ``'auto'``, ``'row'`` or ``'swin'`` (see the
            module docstring). Defaults to 'auto'.

    Returns:
        dict: The ``meta`` written (detected model, windows, eps, ...).

    Raises:
        OverwriteInputError: If ``dst`` is ``src``.
        ConvertError: Naming ``src``, for a file that is not the authors'
            Swin or not ``model``.
    """
    from greenmim_mm.utils_io import atomic_write, refuse_same_file
    if model != 'auto' and model not in RELEASED:
        raise ConvertError(f'Unknown --model {model!r}; choose auto or one '
                           f'of {sorted(RELEASED)}.')
    refuse_same_file(src, dst)
    state, form, args_model = read_official(src)
    order_of = {}
    for k, v in RELEASED.items():
        order_of[v['paper']], order_of[v['paper_2022']] = 'swin', 'row'
    if merge_order == 'auto':
        merge_order = order_of.get(args_model, 'row')
    elif merge_order not in MERGE_ORDERS:
        raise ConvertError(f'Unknown --merge-order {merge_order!r}.')
    elif args_model in order_of and order_of[args_model] != merge_order:
        print(f'warning: {src}: its args name {args_model!r}, trained with '
              f'merge order {order_of[args_model]!r}; converting with '
              f'{merge_order!r} as asked.', file=sys.stderr)
    try:
        converted, skipped = convert(state, merge_order)
        geo = detect(converted)
    except (KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ConvertError(f'{src} ({form}): {msg}') from None
    found = describe(geo)
    if model != 'auto' and geo['name'] != model:
        raise ConvertError(
            f'{src} holds {found}, not the requested {model} '
            f'({RELEASED[model]["paper"]}, windows per stage '
            f'{list(RELEASED[model]["windows"])}).')
    papers = {v[p]: k for k, v in RELEASED.items()
              for p in ('paper', 'paper_2022')}
    if args_model in papers and papers[args_model] != geo['name']:
        raise ConvertError(
            f'{src}: its args name the model {args_model!r} '
            f'({papers[args_model]}), but its weights are {found}.')
    try:
        check_against(converted, build_model(geo))
    except ValueError as e:
        raise ConvertError(f'{src} ({form}): {e}') from None
    if prefix and not prefix.endswith('.'):
        prefix += '.'
    meta = dict(converted_from=osp.basename(src), source_format=form,
                model=geo['name'], paper_model=RELEASED.get(
                    geo['name'], {}).get('paper'),
                arch=dict(embed_dims=geo['embed_dims'],
                          depths=list(geo['depths']),
                          num_heads=list(geo['num_heads'])),
                window_sizes=list(geo['windows']),
                layer_norm_eps=PAPER_LN_EPS, prefix=prefix,
                merge_order=merge_order,
                left_out=sorted(skipped))
    out = {'state_dict': {prefix + k: v.contiguous()
                          for k, v in converted.items()}, 'meta': meta}
    with atomic_write(dst) as tmp:
        torch.save(out, tmp)
    return meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('src', help="the authors' checkpoint")
    p.add_argument('dst', help='output file (never the input)')
    p.add_argument('--model', default='auto',
                   choices=['auto'] + sorted(RELEASED),
                   help='refuse a file that holds another model (default: '
                   'detect and name it)')
    p.add_argument('--prefix', default='',
                   help="key prefix, e.g. 'backbone.' for the shipped "
                   "fine-tune and detection configs (default: bare keys)")
    p.add_argument('--merge-order', default='auto',
                   choices=['auto'] + sorted(MERGE_ORDERS),
                   help='patch-merging concat order of the checkpoint: row '
                   '(released models, authors\' code before 2023-01-16), '
                   'swin (their code since); auto: from args.model, else '
                   'row')
    args = p.parse_args(argv)
    from greenmim_mm.checkpoint import CheckpointLoadError
    from greenmim_mm.utils_io import OverwriteInputError
    try:
        meta = convert_file(args.src, args.dst, args.model, args.prefix,
                            args.merge_order)
    except (ConvertError, CheckpointLoadError, OverwriteInputError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    n = sum(meta['arch']['depths'])
    print(f'{args.src}: {meta["source_format"]}, patch-merging order '
          f'{meta["merge_order"]!r}')
    geo = dict(embed_dims=meta['arch']['embed_dims'],
               depths=tuple(meta['arch']['depths']),
               num_heads=tuple(meta['arch']['num_heads']),
               windows=tuple(meta['window_sizes']), name=meta['model'])
    print(f'detected: {describe(geo)}')
    if meta['left_out']:
        print(f'left out {len(meta["left_out"])} decoder key(s): '
              f'{meta["left_out"][:4]}...')
    print(f'saved {n} blocks as mmpretrain SwinTransformer keys'
          f'{" under " + repr(meta["prefix"]) if meta["prefix"] else ""} '
          f'to {args.dst} (LayerNorm eps of the weights: {PAPER_LN_EPS})')
    if meta['model']:
        spec = RELEASED[meta['model']]
        hint = '' if meta['prefix'] == 'backbone.' else (
            ' (convert with --prefix backbone. for these configs)')
        print(f'load it with{hint}:\n  {spec["finetune"]}\n  '
              f'{spec["detection"]}\n  via --cfg-options '
              f'model.backbone.init_cfg.checkpoint={args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
