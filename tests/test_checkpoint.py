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

    torch.save({'x': _Sneaky()}, path)
    with pytest.raises(CheckpointLoadError, match='refused getattr'):
        safe_load(str(path))
    with open(path, 'wb') as f:  # a plain pickle, not a torch file
        pickle.dump({'x': _Sneaky()}, f)
    with pytest.raises(CheckpointLoadError, match=str(path)):
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


def test_paper_raw_checkpoint_objects_load(tmp_path):
    """The authors' raw training checkpoints hold argparse args, optimizer
    and AMP scaler state."""
    import argparse
    ckpt = dict(model={'encoder.w': torch.ones(1)},
                optimizer={'state': {}, 'param_groups': [{'lr': 1e-3}]},
                scaler={'scale': 65536.0, '_growth_tracker': 0},
                epoch=799,
                args=argparse.Namespace(model='swin_base', lr=1.5e-4,
                                        input_size=224, resume=''),
                hist=collections.defaultdict(list))
    path = tmp_path / 'checkpoint-799.pth'
    torch.save(ckpt, path)
    loaded = safe_load(str(path))
    assert loaded['args'].model == 'swin_base'
    assert loaded['hist'] == {} and loaded['epoch'] == 799


def _pickle_naming(module: str, name: str) -> bytes:
    """Protocol-2 pickle bytes calling ``module.name()``."""
    return (b'\x80\x02c' + module.encode() + b'\n' + name.encode() +
            b'\n)R.')


@pytest.mark.parametrize('module,name', [
    ('numpy.f2py.__main__', 'main'),   # runs f2py's CLI when imported
    ('numpy_helpers', 'run'),          # a sidecar module in the cwd
    ('numpy.testing', 'Tester'),
    ('os', 'system'),
    ('builtins', 'eval'),
    ('numpy.dtypes', 'NotADType'),
])
def test_no_module_is_imported_during_a_load(tmp_path, monkeypatch,
                                             module, name):
    import sys
    (tmp_path / 'numpy_helpers.py').write_text(
        'open("SIDE_EFFECT", "w").write("ran")\ndef run():\n    pass\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    # a torch zip checkpoint whose data.pkl names the module
    path = tmp_path / 'hostile.pth'
    torch.save({'w': torch.ones(1)}, path)
    import zipfile
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        files = {n: z.read(n) for n in names}
    pkl = [n for n in names if n.endswith('data.pkl')][0]
    files[pkl] = _pickle_naming(module, name)
    with zipfile.ZipFile(path, 'w') as z:
        for n in names:
            z.writestr(n, files[n])
    before = set(sys.modules)
    with pytest.raises(CheckpointLoadError, match='hostile.pth'):
        safe_load(str(path))
    assert set(sys.modules) - before == set()
    assert not (tmp_path / 'SIDE_EFFECT').exists()


def test_fuzzed_checkpoints_only_raise_checkpoint_load_error(tmp_path):
    """Truncated, bit-flipped, empty and foreign files all end in
    CheckpointLoadError naming the file; nothing new is imported."""
    import random
    import sys
    buf = HistoryBuffer()
    buf.update(2.0)
    good = tmp_path / 'good.pth'
    torch.save(dict(state_dict={'w': torch.randn(8, 8)},
                    message_hub={'b': buf}, meta={'s': np.int64(1)}), good)
    data = good.read_bytes()
    rng = random.Random(0)
    cases = [b'', b'hello world\n', bytes(rng.randrange(256)
                                          for _ in range(4096))]
    for _ in range(40):
        cut = rng.randrange(1, len(data))
        cases.append(data[:cut])
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 8)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        cases.append(bytes(flipped))
    before = set(sys.modules)
    failures = 0
    for i, blob in enumerate(cases):
        path = tmp_path / f'fuzz_{i}.pth'
        path.write_bytes(blob)
        try:
            safe_load(str(path))
        except CheckpointLoadError as e:
            assert f'fuzz_{i}.pth' in str(e)
            failures += 1
    assert failures >= 3  # at least the empty, text and random files
    assert set(sys.modules) - before == set()


def test_missing_or_directory_path(tmp_path):
    for p in (tmp_path / 'nope.pth', tmp_path):
        with pytest.raises(CheckpointLoadError, match='can not be found'):
            safe_load(str(p))
