import collections
import os
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint

from greenmim_mm.checkpoint import CheckpointLoadError, safe_load


class _Evil:

    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null', ))


def test_runner_like_checkpoint_loads_through_mmengine(tmp_path):
    buf = HistoryBuffer()
    buf.update(1.5)
    ckpt = dict(
        state_dict={'w': torch.ones(2)},
        message_hub=dict(log_scalars={'train/loss': buf}),
        meta=dict(seed=np.int64(3), arr=np.arange(3),
                  dt=np.dtype('float32')),
        # mmengine MultiStepLR (mmdet's 1x/3x schedules) keeps a Counter
        param_schedulers=[dict(milestones=collections.Counter([8, 11]))])
    path = tmp_path / 'runner.pth'
    torch.save(ckpt, path)
    loaded = _load_checkpoint(str(path), map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    assert loaded['message_hub']['log_scalars']['train/loss'].mean() == 1.5
    assert loaded['meta']['seed'] == 3
    assert loaded['param_schedulers'][0]['milestones'] == {8: 1, 11: 1}


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': _Evil()}, path)
    with pytest.raises(CheckpointLoadError, match='posix.system|os.system'):
        safe_load(str(path))


def test_getattr_is_limited_to_history_buffer_methods(tmp_path):
    path = tmp_path / 'getattr.pth'

    class _Sneaky:

        def __reduce__(self):
            # HistoryBuffer is allowed, its __init__ (-> __globals__) not
            return (getattr, (HistoryBuffer, '__init__'))

    with open(path, 'wb') as f:
        pickle.dump({'x': _Sneaky()}, f)
    with pytest.raises(CheckpointLoadError, match='refused getattr'):
        safe_load(str(path))


def test_truncated_checkpoint_gets_clear_error(tmp_path):
    path = tmp_path / 'ok.pth'
    torch.save({'state_dict': {'w': torch.randn(64, 64)}}, path)
    data = path.read_bytes()
    bad = tmp_path / 'truncated.pth'
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointLoadError, match='truncated or corrupt'):
        safe_load(str(bad))
    with pytest.raises(FileNotFoundError, match='can not be found'):
        safe_load(str(tmp_path / 'missing.pth'))
