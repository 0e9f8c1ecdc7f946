"""End-to-end: `mim train mmpretrain <demo config>` on demo photos."""
import glob
import os
import os.path as osp
import re
import subprocess
import sys

import torch


def test_demo_data_are_real_photos(demo_data):
    files = glob.glob(osp.join(demo_data, 'train', '*.jpg'))
    assert len(files) == 32
    sources = {osp.basename(f).rsplit('_', 1)[0] for f in files}
    assert len(sources) >= 8


def test_mim_train_runs_and_writes_checkpoint(repo_root, demo_data,
                                              tmp_path):
    cfg = osp.join(repo_root, 'configs',
                   'greenmim_swin-tiny-w7_1xb16-coslr-20e_demo.py')
    work = tmp_path / 'work'
    cmd = [
        sys.executable, '-m', 'mim', 'train', 'mmpretrain', cfg,
        '--work-dir', str(work), '--auto-scale-lr', '--cfg-options',
        'train_cfg.max_epochs=1', 'train_dataloader.batch_size=8',
        'train_dataloader.num_workers=0', f'train_dataloader.dataset.'
        f'data_root={demo_data}', 'default_hooks.logger.interval=1'
    ]
    env = dict(os.environ, PYTHONPATH=repo_root)
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True,
                          text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    # auto_scale_lr: batch 8 against base batch 16 halves the lr
    assert 'Scaling the original LR by 0.5' in log, log[-4000:]
    losses = [float(x) for x in re.findall(r'loss: ([0-9.]+)', log)]
    assert len(losses) == 4 and all(l == l for l in losses)
    ckpt = work / 'epoch_1.pth'
    assert ckpt.exists()
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    keys = state['state_dict'].keys()
    assert 'backbone.stages.0.blocks.0.attn.w_msa.qkv.weight' in keys
    assert 'neck.mask_token' in keys
