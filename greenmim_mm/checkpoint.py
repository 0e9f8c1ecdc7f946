"""Safe loading of checkpoints (Runner, mmdet, the paper's) on torch >= 2.6.

torch >= 2.6 loads with ``weights_only=True``, which refuses the objects
that every mmengine Runner checkpoint holds (``HistoryBuffer`` in the
message hub, numpy arrays, dtypes and scalars, and the ``getattr(buffer,
'min')`` calls a ``HistoryBuffer`` pickles), so ``resume``, ``load_from``
and ``init_cfg=dict(type='Pretrained')`` all break out of the box.

:func:`safe_load` keeps torch's own safe unpickler (``weights_only=True``)
and widens it, for the duration of one load only, with an explicit list of
objects (:data:`SAFE_GLOBALS`, through
:func:`torch.serialization.safe_globals`) plus a ``getattr`` that only
returns the statistics methods of a ``HistoryBuffer``. torch's unpickler
never imports a module named by the file: every global it accepts is an
object already in memory, so a checkpoint cannot run code or load a module
lying next to it. Every failure (missing, truncated or foreign file, an
object outside the list) raises :class:`CheckpointLoadError` naming the
file and the cause.

Importing :mod:`greenmim_mm` registers :func:`safe_load` as mmengine's
loader for local paths, and for ``http(s)://`` URLs, so every
``load_checkpoint`` of mmengine, mmpretrain and mmdet uses it.
"""
import argparse
import builtins
import collections
import os
import os.path as osp
import pickle
import re
from typing import Any, List, Optional

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer


class CheckpointLoadError(RuntimeError):
    """A checkpoint file is missing, corrupt, truncated or holds an object
    outside :data:`SAFE_GLOBALS`."""


class CheckpointNotFoundError(CheckpointLoadError, FileNotFoundError):
    """The checkpoint path is not a file."""


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to a HistoryBuffer's statistics methods (what
    a pickled ``HistoryBuffer`` calls)."""
    allowed = set(getattr(HistoryBuffer, '_statistics_methods', {})) | {
        'min', 'max', 'mean', 'current'}
    target = obj if isinstance(obj, type) else type(obj)
    if not (isinstance(target, type) and issubclass(target, HistoryBuffer)
            and name in allowed):
        raise pickle.UnpicklingError(
            f'refused getattr({getattr(obj, "__name__", type(obj).__name__)}'
            f', {name!r}): only the statistics methods of mmengine '
            'HistoryBuffer are allowed')
    return getattr(obj, name)


def _numpy_globals() -> List[Any]:
    """numpy objects of pickled arrays, dtypes and scalars, under their
    numpy 2 and numpy 1 (``numpy.core``) names."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    out: List[Any] = [np.ndarray, np.dtype]
    for name in ('_reconstruct', 'scalar'):
        fn = getattr(multiarray, name)
        out += [(fn, f'numpy._core.multiarray.{name}'),
                (fn, f'numpy.core.multiarray.{name}')]
    # numpy >= 1.25 may pickle a dtype's class (numpy.dtypes.Float32DType)
    out += [getattr(np.dtypes, n) for n in dir(np.dtypes)
            if n.endswith('DType')]
    return out


#: Every object a checkpoint may name, besides torch's own defaults
#: (tensors, storages, ``OrderedDict``, ``torch.Size``...): what mmengine
#: Runner, mmdet (``Counter`` milestones) and the paper's raw training
#: checkpoints (``argparse.Namespace`` args) hold.
SAFE_GLOBALS: List[Any] = [
    HistoryBuffer,
    (_history_buffer_getattr, 'builtins.getattr'),
    collections.Counter,
    collections.defaultdict,
    builtins.list,  # defaultdict(list)
    argparse.Namespace,
] + _numpy_globals()


def _cause(e: BaseException) -> str:
    """One line on why a load failed."""
    msg = str(e)
    found = re.search(r'GLOBAL (\S+)', msg)
    if found:  # torch's "Weights only load failed ... GLOBAL x.y ..." text
        return (f'it holds {found.group(1).rstrip(".,")}, which is not on '
                'the allow-list of checkpoint objects '
                '(greenmim_mm.checkpoint.SAFE_GLOBALS); a checkpoint needs '
                'only tensors and the numpy/mmengine objects of a Runner '
                'checkpoint')
    if 'WeightsUnpickler error:' in msg:
        detail = msg.split('WeightsUnpickler error:', 1)[1].strip()
        detail = (detail.splitlines() or ['(no detail)'])[0].strip()
        return ('it is not a torch checkpoint, or holds pickle data the '
                f'safe unpickler refuses ({detail.rstrip(".")})')
    lines = [ln for ln in msg.splitlines() if ln.strip()]
    first = lines[0].strip() if lines else '(no message)'
    return ('the file is truncated or corrupt, or not a torch checkpoint '
            f'({type(e).__name__}: {first})')


def safe_load(filename: str, map_location: Optional[Any] = None) -> Any:
    """Load a checkpoint without unpickling arbitrary objects.

    Args:
        filename (str): Path of the checkpoint.
        map_location (Any, optional): As in :func:`torch.load`.
            Defaults to None.

    Returns:
        Any: The checkpoint (usually a dict).

    Raises:
        CheckpointNotFoundError: If the path is not a file (also a
            ``FileNotFoundError``).
        CheckpointLoadError: If the file is truncated, corrupt, not a torch
            checkpoint, or holds an object outside :data:`SAFE_GLOBALS`.
    """
    filename = osp.expanduser(os.fspath(filename))
    if not osp.isfile(filename):
        raise CheckpointNotFoundError(
            f'Checkpoint {filename} can not be found (no such file).')
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except Exception as e:  # noqa: BLE001 - every cause, one error type
        size = osp.getsize(filename)
        hint = ' The file is empty.' if size == 0 else ''
        raise CheckpointLoadError(
            f'Checkpoint {filename} was not loaded: {_cause(e)}.{hint}'
        ) from e


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
