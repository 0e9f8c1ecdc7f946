"""Two-process data-parallel training on the CPU (gloo) through
``tools/dist_train.sh`` -> torchrun -> ``tools/train.py --launcher pytorch``,
and the command line ``tools/slurm_train.sh`` hands to srun."""
import json
import os
import os.path as osp
import socket
import stat
import subprocess
import sys

import pytest
import torch

DEMO_CFG = 'greenmim_swin-tiny-w7_1xb16-coslr-20e_demo.py'

PROBE = '''
import json
import os.path as osp

import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class RankProbeHook(Hook):
    """Log each rank's batches and losses; dump its final weights."""

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        rec = dict(world_size=get_world_size(),
                   files=[osp.basename(s.img_path)
                          for s in data_batch['data_samples']],
                   loss=float(outputs['loss'].detach()))
        path = osp.join(runner.work_dir, f'probe_rank{get_rank()}.jsonl')
        with open(path, 'a') as f:
            f.write(json.dumps(rec) + '\\n')

    def after_run(self, runner):
        model = getattr(runner.model, 'module', runner.model)
        torch.save(model.state_dict(),
                   osp.join(runner.work_dir, f'final_rank{get_rank()}.pth'))
'''

CFG = '''
_base_ = {base!r}
custom_imports = dict(imports=['greenmim_mm', 'rank_probe'],
                      allow_failed_imports=False)
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32,
                            depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])),
    neck=dict(in_channels=256, embed_dims=64, num_heads=4))
train_dataloader = dict(
    batch_size=4, num_workers=0,
    dataset=dict(
        data_root={data!r}, indices=16,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='RandomResizedCrop', scale=64, backend='pillow'),
            dict(type='PackInputs')
        ]))
train_cfg = dict(max_epochs=1)
custom_hooks = [dict(type='RankProbeHook')]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
'''


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def dist_run(repo_root, demo_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist')
    (tmp / 'rank_probe.py').write_text(PROBE)
    cfg = tmp / 'cfg.py'
    cfg.write_text(CFG.format(base=osp.join(repo_root, 'configs', DEMO_CFG),
                              data=demo_data))
    work = tmp / 'work'
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()),
               OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(
                   [str(tmp), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run(
        ['bash', osp.join(repo_root, 'tools', 'dist_train.sh'), str(cfg),
         '2', '--work-dir', str(work)],
        env=env, cwd=str(tmp), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return work, log


def _records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_both_ranks_train_on_disjoint_shards(dist_run):
    work, log = dist_run
    assert 'Distributed launcher: pytorch' in log
    recs = [_records(work / f'probe_rank{r}.jsonl') for r in (0, 1)]
    for rank_recs in recs:
        # 16 images, 2 ranks, batch 4: 2 iterations per rank
        assert len(rank_recs) == 2
        assert all(r['world_size'] == 2 for r in rank_recs)
    files = [sum((r['files'] for r in rank_recs), []) for rank_recs in recs]
    assert not set(files[0]) & set(files[1])
    assert len(set(files[0]) | set(files[1])) == 16
    # different data (and masks) on each rank: different losses
    assert recs[0][0]['loss'] != recs[1][0]['loss']


def test_ranks_end_with_identical_weights(dist_run):
    import greenmim_mm
    work, _ = dist_run
    w0 = torch.load(work / 'final_rank0.pth')
    w1 = torch.load(work / 'final_rank1.pth')
    ckpt = greenmim_mm.safe_load(str(work / 'epoch_1.pth'))['state_dict']
    assert w0.keys() == w1.keys() == ckpt.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
        assert torch.equal(w0[k], ckpt[k]), k


def test_slurm_wrapper_command_line(repo_root, tmp_path):
    """srun gets the partition, task layout and ``--launcher slurm``."""
    fake = tmp_path / 'srun'
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > '
                    f'{tmp_path}/srun_args\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f'{tmp_path}{os.pathsep}{os.environ["PATH"]}',
               GPUS='16', GPUS_PER_NODE='8', CPUS_PER_TASK='4',
               SRUN_ARGS='--quotatype=auto --time=1:00:00')
    subprocess.run(
        ['bash', osp.join(repo_root, 'tools', 'slurm_train.sh'), 'gpu',
         'greenmim', 'configs/greenmim_swin.py', '--work-dir', 'w d',
         '--amp'], env=env, check=True, timeout=60)
    args = (tmp_path / 'srun_args').read_text().splitlines()
    assert args[:2] == ['-p', 'gpu']
    for opt in ('--job-name=greenmim', '--gres=gpu:8', '--ntasks=16',
                '--ntasks-per-node=8', '--cpus-per-task=4',
                '--quotatype=auto', '--time=1:00:00'):
        assert opt in args
    i = args.index(osp.join(repo_root, 'tools', 'train.py'))
    assert args[i + 1:] == ['configs/greenmim_swin.py', '--launcher',
                            'slurm', '--work-dir', 'w d', '--amp']
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(['bash', osp.join(repo_root, 'tools',
                                         'slurm_train.sh'), 'gpu'],
                       env=env, check=True, capture_output=True)
