"""End-to-end: `mim train mmpretrain <demo config>` on demo photos, and
loading what the Runner wrote under torch's default ``weights_only``."""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

DEMO_CFG = 'greenmim_swin-tiny-w7_1xb16-coslr-20e_demo.py'


def _mim_train(repo_root, demo_data, work, *extra):
    cmd = [
        sys.executable, '-m', 'mim', 'train', 'mmpretrain',
        osp.join(repo_root, 'configs', DEMO_CFG), '--work-dir',
        str(work), *extra, '--cfg-options', 'train_cfg.max_epochs=1',
        'train_dataloader.batch_size=8', 'train_dataloader.num_workers=0',
        f'train_dataloader.dataset.data_root={demo_data}',
        'default_hooks.logger.interval=1'
    ]
    env = dict(os.environ, PYTHONPATH=repo_root)
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope='module')
def trained(repo_root, demo_data, tmp_path_factory):
    work = tmp_path_factory.mktemp('work')
    log = _mim_train(repo_root, demo_data, work, '--auto-scale-lr')
    return work, log


def test_demo_data_are_real_photos(demo_data):
    files = glob.glob(osp.join(demo_data, 'train', '*.jpg'))
    assert len(files) == 32
    sources = {osp.basename(f).rsplit('_', 1)[0] for f in files}
    assert len(sources) >= 8


def test_mim_train_runs_and_writes_checkpoint(trained):
    work, log = trained
    # auto_scale_lr: batch 8 against base batch 16 halves the lr
    assert 'Scaling the original LR by 0.5' in log, log[-4000:]
    losses = [float(x) for x in re.findall(r'loss: ([0-9.]+)', log)]
    assert len(losses) == 4 and all(l == l for l in losses)
    ckpt = work / 'epoch_1.pth'
    assert ckpt.exists()
    # a Runner checkpoint holds more than tensors: plain torch.load refuses
    with pytest.raises(Exception, match='[Ww]eights only load failed'):
        torch.load(ckpt, map_location='cpu')


def test_load_from_runner_checkpoint(repo_root, demo_data, trained,
                                     tmp_path):
    ckpt = trained[0] / 'epoch_1.pth'
    log = _mim_train(repo_root, demo_data, tmp_path / 'again',
                     '--cfg-options', f'load_from={ckpt}')
    assert f'Load checkpoint from {ckpt}' in log, log[-3000:]


def test_pretrained_init_into_mmpretrain_swin(trained):
    import greenmim_mm  # noqa: F401  registers the safe loader
    from mmpretrain.models import SwinTransformer
    ckpt = str(trained[0] / 'epoch_1.pth')
    model = SwinTransformer(
        arch='tiny',
        init_cfg=dict(type='Pretrained', checkpoint=ckpt,
                      prefix='backbone.'))
    before = model.stages[0].blocks[0].attn.w_msa.qkv.weight.clone()
    model.init_weights()
    state = greenmim_mm.safe_load(ckpt)['state_dict']
    after = model.stages[0].blocks[0].attn.w_msa.qkv.weight
    assert not torch.equal(before, after)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state['backbone.' + k]), k
