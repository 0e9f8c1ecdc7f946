"""Load a GreenMIM model from a config and checkpoint, and prepare images
with the config's test preprocessing (for the visualisation tools)."""
import glob
import logging
import os.path as osp
from typing import (Any, Dict, List, Optional, Sequence, Tuple,
                    Union)

import torch
from mmengine.logging import print_log
from mmengine.config import Config
from mmengine.dataset import Compose, default_collate
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings
from torch import Tensor, nn

#: image suffixes picked up from a folder
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')


def load_config(config: Union[str, Config]) -> Config:
    """Read a config and import its ``custom_imports`` (registers modules).

    Args:
        config (str | Config): Config file or object.

    Returns:
        Config: The config, with mmpretrain as default scope.
    """
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    imports = cfg.get('custom_imports', None)
    if imports:
        import_modules_from_strings(**imports)
    import greenmim_mm  # noqa: F401  registers models and the safe loader
    init_default_scope(cfg.get('default_scope', 'mmpretrain') or
                       'mmpretrain')
    return cfg


def load_model(config: Union[str, Config],
               checkpoint: Optional[str] = None,
               device: Union[str, torch.device] = 'cpu') -> nn.Module:
    """Build ``cfg.model`` and load a checkpoint (``init_model`` style).

    The checkpoint is read with :func:`greenmim_mm.checkpoint.safe_load`
    and loaded strictly (see :func:`load_state_strict`): a tool must not
    draw from a model that is partly random.

    Args:
        config (str | Config): Config file or object.
        checkpoint (str, optional): Runner or ``{'state_dict': ...}``
            checkpoint of the whole model. Defaults to None (random
            weights).
        device (str | torch.device): Device. Defaults to 'cpu'.

    Returns:
        nn.Module: The model in eval mode, with ``model.cfg`` set.

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
        ValueError: If the checkpoint does not fit the model exactly.
    """
    from mmpretrain.registry import MODELS
    cfg = load_config(config)
    model_cfg = cfg.model.copy()
    # as mmengine's Runner does: a top-level data_preprocessor is the
    # model's unless the model sets its own
    if cfg.get('data_preprocessor', None) is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    if checkpoint is not None:
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(f'Checkpoint {checkpoint!r} not found.')
        load_state_strict(model, checkpoint)
    else:
        model.init_weights()
    model.cfg = cfg
    model.to(device)
    model.eval()
    return model


def _state_dict_of(ckpt: Any, filename: str) -> Dict[str, Tensor]:
    """The state dict of a loaded checkpoint, without a ``module.`` prefix
    (DDP)."""
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f'Checkpoint {filename} holds no state dict '
                         f'(got {type(ckpt).__name__}).')
    if all(isinstance(k, str) and k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    return state


def load_state_strict(model: nn.Module, filename: str) -> None:
    """Load a checkpoint into ``model`` with every key and shape matching.

    Args:
        model (nn.Module): The model (a ``GreenMIM`` for the tools).
        filename (str): Checkpoint file, read with ``safe_load``.

    Raises:
        ValueError: Naming the file and the missing, unexpected or
            mis-shaped keys; for a checkpoint without decoder (``neck.``)
            weights, e.g. an extracted backbone, saying so.
    """
    from ..checkpoint import safe_load
    state = _state_dict_of(safe_load(filename, map_location='cpu'),
                           filename)
    own = model.state_dict()
    # a checkpoint of another window: resize its bias tables with torch (as
    # the checked Pretrained load does) and keep the model's own index
    # buffers, instead of refusing it or failing in mmpretrain's SciPy hook
    from ..models.backbones.pretrained_check import fit_bias_tables
    resized, stale = fit_bias_tables(state, own, f'Checkpoint {filename}')
    for key in stale:
        state[key] = own[key]
    if resized:
        print_log(f'Checkpoint {filename}: resized {len(resized)} relative '
                  f'position bias tables to the window of the config: '
                  f'{_summary(resized)}.', logger='current',
                  level=logging.WARNING)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing and any(k.startswith('neck.') for k in own) and not any(
            str(k).startswith('neck.') for k in state):
        raise ValueError(
            f'Checkpoint {filename}: this checkpoint has no decoder; pass a '
            'full GreenMIM pretraining checkpoint (an extracted backbone '
            f'cannot reconstruct). Missing: {_by_module(missing)}; the file '
            f'holds {_summary(sorted(state))}.')
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)}, model '
              f'{tuple(v.shape)}' for k, v in own.items()
              if k in state and isinstance(state[k], Tensor)
              and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f'missing {len(missing)} key(s): '
                         f'{_summary(missing)}')
        if unexpected:
            parts.append(f'unexpected {len(unexpected)} key(s): '
                         f'{_summary(unexpected)}')
        if shapes:
            parts.append(f'shape mismatches: {"; ".join(shapes[:5])}')
        raise ValueError(
            f'Checkpoint {filename} does not fit the model of this config ('
            + '; '.join(parts) + '). Pass the checkpoint trained with this '
            'config.')
    model.load_state_dict(state, strict=True)


def _by_module(keys: Sequence[str]) -> str:
    """Key counts per top-level module, e.g. ``neck.* (12 keys)``."""
    counts: Dict[str, int] = {}
    for k in keys:
        counts[k.split('.')[0]] = counts.get(k.split('.')[0], 0) + 1
    return ', '.join(f'{m}.* ({n} key{"s" * (n != 1)})'
                     for m, n in sorted(counts.items()))


def _summary(keys: Sequence[str], n: int = 6) -> str:
    """At most ``n`` keys, then how many more."""
    keys = list(keys)
    more = f' and {len(keys) - n} more' if len(keys) > n else ''
    return ', '.join(map(str, keys[:n])) + more


def input_size(cfg: Config) -> Tuple[int, int]:
    """Model input size ``(H, W)``: the backbone's ``img_size``.

    Args:
        cfg (Config): Model config.

    Returns:
        tuple[int, int]: Defaults to 224 x 224 when the backbone has none.
    """
    size = cfg.model.get('backbone', {}).get('img_size', 224)
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def build_test_pipeline(cfg: Config) -> List[dict]:
    """The config's test pipeline, or a resize + centre crop to the model's
    input size.

    ``cfg.test_pipeline`` (or ``cfg.test_dataloader.dataset.pipeline``) is
    used when present; otherwise the shorter edge is resized to the input
    size and the centre is cropped.

    Args:
        cfg (Config): Config.

    Returns:
        list[dict]: Transform configs ending with ``PackInputs``.
    """
    if cfg.get('test_pipeline', None):
        return list(cfg.test_pipeline)
    test_dl = cfg.get('test_dataloader', None)
    if test_dl and test_dl.get('dataset', {}).get('pipeline', None):
        return list(test_dl.dataset.pipeline)
    h, w = input_size(cfg)
    return [
        dict(type='LoadImageFromFile'),
        dict(type='ResizeEdge', scale=max(h, w), edge='short',
             backend='pillow', interpolation='bicubic'),
        dict(type='CenterCrop', crop_size=(w, h)),
        dict(type='PackInputs'),
    ]


def list_images(path: str) -> List[str]:
    """An image file, or the images of a folder (sorted).

    Args:
        path (str): File or folder.

    Returns:
        list[str]: Image paths.
    """
    if osp.isfile(path):
        return [path]
    if osp.isdir(path):
        files = sorted(
            f for f in glob.glob(osp.join(path, '*'))
            if osp.splitext(f)[1].lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f'No images ({", ".join(IMAGE_SUFFIXES)})'
                                    f' in folder {path!r}.')
        return files
    raise FileNotFoundError(f'{path!r} is neither an image nor a folder.')


def load_images(model: nn.Module, paths: Sequence[str]) -> Tensor:
    """Read images with the test pipeline and normalise them with the
    model's data preprocessor.

    Args:
        model (nn.Module): Model from :func:`load_model` (``model.cfg``).
        paths (Sequence[str]): Image files.

    Returns:
        Tensor: ``(B, 3, H, W)`` normalised images on the model's device.
    """
    from mmpretrain.registry import TRANSFORMS
    pipeline = Compose([TRANSFORMS.build(t) for t in build_test_pipeline(
        model.cfg)])
    packed = [pipeline(dict(img_path=p)) for p in paths]
    batch = default_collate(packed)
    return model.data_preprocessor(batch, False)['inputs']
