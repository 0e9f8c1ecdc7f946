"""Safe loading of mmengine Runner checkpoints on torch >= 2.6.

torch >= 2.6 loads with ``weights_only=True``, which refuses the
mmengine objects that every Runner checkpoint holds (``HistoryBuffer`` in
the message hub, numpy arrays, dtypes and scalars, and the
``getattr(buffer, 'min')`` calls a ``HistoryBuffer`` pickles). So
``resume``, ``load_from`` and ``init_cfg=dict(type='Pretrained')`` all break.

Switching safe loading off would unpickle arbitrary objects from files
users download. Instead, :func:`safe_load` first tries torch's own
``weights_only=True`` load and otherwise unpickles with a restricted
unpickler that knows exactly the objects mmengine writes: an explicit
allow-list of globals, and a ``getattr`` that only returns the statistics
methods of a ``HistoryBuffer``. Anything else is refused with an error
naming the object.

Importing :mod:`greenmim_mm` registers :func:`safe_load` as mmengine's
loader for local paths, and for ``http(s)://`` URLs, so every
``load_checkpoint`` of mmengine, mmpretrain and mmdet uses it.
"""
import os
import os.path as osp
import pickle
import types
import zipfile
from typing import Any, Optional

import torch

_ALLOWED = {
    ('collections', 'OrderedDict'),
    ('collections', 'defaultdict'),
    ('collections', 'Counter'),  # MultiStepLR milestones (mmdet)
    ('torch._utils', '_rebuild_tensor_v2'),
    ('torch._utils', '_rebuild_tensor_v3'),
    ('torch._utils', '_rebuild_parameter'),
    ('torch._utils', '_rebuild_parameter_with_state'),
    ('torch', 'Size'),
    ('torch', 'device'),
    ('_codecs', 'encode'),
    ('numpy', 'ndarray'),
    ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'),
    ('numpy._core.multiarray', 'scalar'),
    ('mmengine.logging.history_buffer', 'HistoryBuffer'),
}
_TORCH_TYPES = ('Storage', 'Tensor')


class CheckpointLoadError(RuntimeError):
    """A checkpoint file is corrupt, truncated or holds forbidden objects."""


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to a HistoryBuffer's statistics methods."""
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = set(getattr(HistoryBuffer, '_statistics_methods', {})) | {
        'min', 'max', 'mean', 'current'}
    target = obj if isinstance(obj, type) else type(obj)
    if not (isinstance(target, type) and issubclass(target, HistoryBuffer)
            and name in allowed):
        raise pickle.UnpicklingError(
            f'refused getattr({type(obj).__name__}, {name!r}): only the '
            'statistics methods of mmengine HistoryBuffer are allowed')
    return getattr(obj, name)


class _RestrictedUnpickler(pickle.Unpickler):

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module in ('builtins', '__builtin__') and name == 'getattr':
            return _history_buffer_getattr
        if module == 'torch' and name.endswith(_TORCH_TYPES):
            return super().find_class(module, name)
        if module.startswith('numpy') and name.endswith('DType'):
            return super().find_class(module, name)  # numpy.dtypes.*DType
        raise pickle.UnpicklingError(
            f'refused to load {module}.{name}: not a tensor, numpy or '
            'mmengine object a checkpoint needs')


#: a ``pickle``-like module for ``torch.load(pickle_module=...)``
restricted_pickle = types.SimpleNamespace(
    Unpickler=_RestrictedUnpickler,
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
    __name__='greenmim_mm.restricted_pickle')


def safe_load(filename: str, map_location: Optional[Any] = None) -> Any:
    """Load a checkpoint without unpickling arbitrary objects.

    Args:
        filename (str): Path of the checkpoint.
        map_location (Any, optional): As in :func:`torch.load`.
            Defaults to None.

    Returns:
        Any: The checkpoint (usually a dict).

    Raises:
        FileNotFoundError: If the file does not exist.
        CheckpointLoadError: If the file is truncated or corrupt, or holds
            an object outside the allow-list.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint {filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location,
                          weights_only=True)
    except pickle.UnpicklingError:
        pass  # holds mmengine objects: use the restricted unpickler
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointLoadError(
            f'Checkpoint {filename} is truncated or corrupt '
            f'({type(e).__name__}: {str(e).splitlines()[0]}). Download or '
            'save it again.') from e
    try:
        return torch.load(filename, map_location=map_location,
                          weights_only=False,
                          pickle_module=restricted_pickle)
    except pickle.UnpicklingError as e:
        raise CheckpointLoadError(
            f'Checkpoint {filename} was not loaded: {e}. Only tensors and '
            'the numpy/mmengine objects of a Runner checkpoint are '
            'accepted.') from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointLoadError(
            f'Checkpoint {filename} is truncated or corrupt '
            f'({type(e).__name__}: {str(e).splitlines()[0]}).') from e


def _load_local(filename: str, map_location: Optional[Any] = None) -> Any:
    return safe_load(filename, map_location)


def _load_http(filename: str, map_location: Optional[Any] = None,
               model_dir: Optional[str] = None, progress: bool = False
               ) -> Any:
    from urllib.parse import urlparse

    from mmengine.dist import barrier, get_dist_info
    from torch.hub import download_url_to_file, get_dir
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    cached = osp.join(model_dir, osp.basename(urlparse(filename).path))
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.isfile(cached):
        os.makedirs(model_dir, exist_ok=True)
        download_url_to_file(filename, cached, progress=progress)
    if world_size > 1:
        barrier()
    return safe_load(cached, map_location)


def register_safe_loader() -> None:
    """Make mmengine's ``CheckpointLoader`` use :func:`safe_load`."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', force=True)(_load_local)
    CheckpointLoader.register_scheme(
        prefixes=('http://', 'https://'), force=True)(_load_http)
