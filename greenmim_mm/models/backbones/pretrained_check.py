"""Checked ``init_cfg=dict(type='Pretrained')`` loading for Green backbones.

mmengine's ``PretrainedInit`` loads with ``strict=False`` and only logs a
warning when keys or shapes do not match, so a checkpoint of the wrong
architecture silently leaves most of a backbone at its random init.
:func:`load_pretrained_checked` loads the same way (mmengine's
``CheckpointLoader``, so ``prefix``, URLs and our safe loader all work, and
the module's own load hooks, e.g. mmpretrain Swin's resizing of relative
position bias tables and absolute position embeddings) and then raises a
``ValueError`` naming the checkpoint, the model class and the offending
keys when

* a tensor has the wrong shape,
* the checkpoint holds keys the model does not have, or
* fewer than ``min_loaded`` of the model's parameters are in it.

Before the load, relative-position-bias tables of another window are
resized with torch (:mod:`.bias_resize`; mmpretrain's own hook needs a SciPy
function removed in SciPy 1.14) and their stale ``relative_position_index``
buffers dropped, and SimMIM's ``mask_token`` is dropped; both are named in a
warning.

Parameters that are only missing (a few, e.g. the ``norm0..norm2`` that
mmdet's ``out_indices=(0, 1, 2, 3)`` adds to a pretraining checkpoint) are
logged as a warning and keep their init.

A backbone opts in with::

    def init_weights(self):
        init_weights_checked(self, super().init_weights)
"""
import logging
import re
from typing import (Callable, Dict, List, NamedTuple, Optional, Sequence,
                    Tuple)

from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.runner.checkpoint import _load_checkpoint
import torch
from torch import nn

from .bias_resize import bias_table_window, resize_rel_pos_bias_table

#: checkpoint keys that old mmpretrain Swin checkpoints carry and that no
#: current model has (recomputed buffers)
DEFAULT_IGNORED = (r'(^|\.)attn_mask$', r'(^|\.)num_batches_tracked$')

#: keys of pretraining-only parameters a backbone checkpoint may hold
#: (mmpretrain ``SimMIMSwinTransformer``); dropped with a warning when the
#: model has no such key
PRETRAIN_ONLY = ('mask_token', )


class PretrainedReport(NamedTuple):
    """What a checked load did.

    Attributes:
        loaded (list[str]): Model keys taken from the checkpoint.
        missing (list[str]): Model parameters not in the checkpoint.
        ignored (list[str]): Checkpoint keys skipped by ``ignore``.
        resized (list[str]): Bias tables resized to the model's window.
        dropped (list[str]): Checkpoint keys dropped with a warning
            (pretraining-only parameters, stale index buffers).
    """
    loaded: List[str]
    missing: List[str]
    ignored: List[str]
    resized: Tuple[str, ...] = ()
    dropped: Tuple[str, ...] = ()


def is_pretrained_cfg(cfg: Optional[dict]) -> bool:
    """Whether an ``init_cfg`` entry is mmengine's ``Pretrained``."""
    return isinstance(cfg, dict) and (cfg.get('type') == 'Pretrained'
                                      or cfg.get('type') is PretrainedInit)


def _short(keys: Sequence[str], n: int = 8) -> str:
    keys = list(keys)
    more = f' ... (+{len(keys) - n} more)' if len(keys) > n else ''
    return ', '.join(keys[:n]) + more


def _common_prefix_hint(keys: Sequence[str], prefix: Optional[str]) -> str:
    heads = {k.split('.', 1)[0] for k in keys}
    if prefix is None and len(heads) <= 4 and 'backbone' in heads:
        return (" The checkpoint holds a whole model: pass "
                "prefix='backbone.' in init_cfg.")
    return ''


def fit_bias_tables(state: Dict[str, torch.Tensor],
                    model_state: Dict[str, torch.Tensor],
                    where: str = 'Checkpoint') -> Tuple[List[str], List[str]]:
    """Resize, in ``state``, bias tables whose window differs from the model's.

    Each ``*relative_position_bias_table`` of another size than the model's
    is resized with :func:`resize_rel_pos_bias_table`; a
    ``*relative_position_index`` of another shape than the model's is
    dropped (the model keeps its own, recomputed one).

    Args:
        state (dict[str, Tensor]): Checkpoint state, changed in place.
        model_state (dict[str, Tensor]): ``module.state_dict()``.
        where (str): Checkpoint description for errors. Defaults to
            'Checkpoint'.

    Returns:
        tuple[list[str], list[str]]: Resized keys (as ``'key (w7 -> w14)'``)
        and dropped index keys.

    Raises:
        ValueError: If a table's rows are not ``(2w-1)^2`` or its number of
            heads differs from the model's.
    """
    resized, dropped = [], []
    for key in list(state):
        if key not in model_state:
            continue
        ours, theirs = model_state[key].shape, state[key].shape
        if key.endswith('relative_position_bias_table') and ours != theirs:
            try:
                src = bias_table_window(theirs, key)
                dst = bias_table_window(ours, key)
            except ValueError as e:
                raise ValueError(
                    f'{where}: cannot resize {key} from {tuple(theirs)} to '
                    f'the model\'s {tuple(ours)}: {e}') from None
            if theirs[1] != ours[1]:
                raise ValueError(
                    f'{where}: {key} has {theirs[1]} heads (shape '
                    f'{tuple(theirs)}), the model {ours[1]} (shape '
                    f'{tuple(ours)}). Is it a checkpoint of another arch?')
            state[key] = resize_rel_pos_bias_table(state[key], dst, key)
            resized.append(f'{key} (w{src} -> w{dst})')
        elif key.endswith('relative_position_index') and ours != theirs:
            del state[key]
            dropped.append(key)
    return resized, dropped


def load_pretrained_checked(module: nn.Module,
                            checkpoint: str,
                            prefix: Optional[str] = None,
                            map_location: str = 'cpu',
                            min_loaded: float = 0.9,
                            ignore: Sequence[str] = DEFAULT_IGNORED
                            ) -> PretrainedReport:
    """Load a pretrained checkpoint into ``module``, refusing a mismatch.

    Args:
        module (nn.Module): The model (e.g. a Green backbone).
        checkpoint (str): Path or URL, as in mmengine's ``Pretrained``.
        prefix (str, optional): Take only the keys under this prefix (e.g.
            ``'backbone.'``) and strip it. Defaults to None (all keys, with
            a DDP ``module.`` prefix stripped, as mmengine does).
        map_location (str): As in :func:`torch.load`. Defaults to 'cpu'.
        min_loaded (float): Least fraction of the model's parameters the
            checkpoint must provide. Defaults to 0.9.
        ignore (Sequence[str]): Regexes of checkpoint keys to drop
            silently. Defaults to :data:`DEFAULT_IGNORED`.

    Returns:
        PretrainedReport: The loaded, missing and ignored keys.

    Raises:
        ValueError: On any shape mismatch or unexpected key, when the
            prefix matches nothing, or when too few parameters are found.
    """
    name = type(module).__name__
    ckpt = _load_checkpoint(checkpoint, map_location=map_location)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'Checkpoint {checkpoint} holds no state dict '
                         f'(got {type(ckpt).__name__}).')
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        sub = {k[len(prefix):]: v for k, v in state.items()
               if k.startswith(prefix)}
        if not sub:
            raise ValueError(
                f'Checkpoint {checkpoint} has no key under prefix '
                f'{prefix!r} for {name}; its keys start with '
                f'{_short(sorted({k.split(".", 1)[0] for k in state}))}.')
        state = sub
    else:
        state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    ignored = [k for k in state if any(re.search(p, k) for p in ignore)]
    dropped = set(ignored)
    state = {k: v for k, v in state.items() if k not in dropped}

    where = f'Checkpoint {checkpoint}' + (f' (prefix {prefix!r})'
                                          if prefix else '')
    model_state = module.state_dict()
    extra = [k for k in PRETRAIN_ONLY if k in state and k not in model_state]
    for k in extra:
        del state[k]
    if extra:
        print_log(f'{where}: dropped {_short(extra)}, a pretraining-only '
                  f'parameter (SimMIM) that {name} does not have.',
                  logger='current', level=logging.WARNING)
    resized, stale = fit_bias_tables(state, model_state, where)
    if resized:
        print_log(f'{where}: resized {len(resized)} relative position bias '
                  f'tables to the window of {name}: {_short(resized)}.',
                  logger='current', level=logging.WARNING)
    if stale:
        print_log(f'{where}: dropped {len(stale)} relative_position_index '
                  f'buffers of another window ({_short(stale)}); {name} '
                  'keeps its own.', logger='current', level=logging.WARNING)
    try:
        # the module's own _load_from_state_dict and pre-hooks run here
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        sizes = re.findall(r'size mismatch for ([^:]+):', str(e))
        if not sizes:
            raise
        raise ValueError(
            f'{where} does not fit {name}: {len(sizes)} tensors have the '
            f'wrong shape ({_short(sizes)}). Is it a checkpoint of another '
            f'architecture (arch, embed dims, heads)?\n{e}') from None

    params = {k for k, _ in module.named_parameters()}
    missing_params = [k for k in missing if k in params]
    missing_set = set(missing)
    loaded = [k for k in module.state_dict() if k not in missing_set]
    problems = []
    if unexpected:
        problems.append(f'{len(unexpected)} keys are not in the model '
                        f'({_short(unexpected)})')
    found = len(params) - len(missing_params)
    if found < min_loaded * len(params):
        problems.append(f'only {found} of its {len(params)} parameters are '
                        f'in the checkpoint (missing: '
                        f'{_short(missing_params)})')
    if problems:
        raise ValueError(
            f'{where} does not fit {name}: ' + '; '.join(problems) + '.' +
            _common_prefix_hint(list(unexpected), prefix) +
            ' Check arch/depths and the prefix.')
    if missing_params:
        print_log(
            f'{where}: {len(missing_params)} parameters of {name} are not '
            f'in the checkpoint and keep their init: '
            f'{_short(missing_params)}', logger='current',
            level=logging.WARNING)
    print_log(f'{where}: loaded {len(loaded)} tensors into {name}.',
              logger='current')
    if hasattr(module, '_params_init_info'):
        update_init_info(module, init_info=f'{name}: load from {checkpoint}')
    return PretrainedReport(loaded, missing_params, ignored, tuple(resized),
                            tuple(extra + stale))


def init_weights_checked(module: nn.Module,
                         parent_init_weights: Callable[[], None]) -> None:
    """``init_weights`` that loads ``Pretrained`` entries with checks.

    Runs the parent's ``init_weights`` with the ``Pretrained`` entries of
    ``module.init_cfg`` removed (other entries and children's inits as
    usual), then loads each checkpoint with
    :func:`load_pretrained_checked`, last, as mmengine does.

    Args:
        module (nn.Module): A ``BaseModule`` backbone.
        parent_init_weights (Callable): ``super().init_weights``.
    """
    cfgs = module.init_cfg
    cfgs = [cfgs] if isinstance(cfgs, dict) else list(cfgs or [])
    pretrained = [c for c in cfgs if is_pretrained_cfg(c)]
    if not pretrained or getattr(module, '_is_init', False):
        parent_init_weights()
        return
    others = [c for c in cfgs if not is_pretrained_cfg(c)]
    saved = module.init_cfg
    module.init_cfg = others or None
    try:
        parent_init_weights()
    finally:
        module.init_cfg = saved
    for cfg in pretrained:
        extra = set(cfg) - {'type', 'checkpoint', 'prefix', 'map_location'}
        if extra or 'checkpoint' not in cfg:
            raise ValueError(
                f'Pretrained init_cfg of {type(module).__name__} takes '
                f'checkpoint, prefix and map_location, got {dict(cfg)}.')
        load_pretrained_checked(module, cfg['checkpoint'],
                                prefix=cfg.get('prefix'),
                                map_location=cfg.get('map_location', 'cpu'))
