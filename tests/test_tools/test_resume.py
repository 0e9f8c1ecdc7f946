"""Crash and resume: SIGKILL a run after its first checkpoint, resume it
with ``tools/train.py --resume``, and compare with an uninterrupted run.

A test-only hook (written to a tmp dir on PYTHONPATH, loaded through
``custom_imports``) records every iteration's index, lr, batch file names
and loss, and dumps the final weights. The runs use the demo config shrunk
to 64 px images, 16 images, batch 4, one data worker (mmengine reseeds
workers every epoch, so augmentation is reproducible at epoch
boundaries), 2 epochs of 4 iterations, and a narrow Swin (32 channels).
"""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch

DEMO_CFG = 'greenmim_swin-tiny-w7_1xb16-coslr-20e_demo.py'
ITERS_PER_EPOCH = 4
EPOCHS = 2

PROBE = '''
import json
import os.path as osp

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class ResumeProbeHook(Hook):
    """Log (iter, lr, batch files, loss) per iteration; dump final weights."""

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        rec = dict(iter=runner.iter,
                   lr=runner.optim_wrapper.get_lr()['lr'][0],
                   files=[osp.basename(s.img_path)
                          for s in data_batch['data_samples']],
                   loss=float(outputs['loss'].detach()))
        with open(osp.join(runner.work_dir, 'probe.jsonl'), 'a') as f:
            f.write(json.dumps(rec) + '\\n')
            f.flush()

    def after_run(self, runner):
        model = getattr(runner.model, 'module', runner.model)
        torch.save(model.state_dict(),
                   osp.join(runner.work_dir, f'final_rank{get_rank()}.pth'))
'''

CFG = '''
_base_ = {base!r}
custom_imports = dict(imports=['greenmim_mm', 'resume_probe'],
                      allow_failed_imports=False)
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32,
                            depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])),
    neck=dict(in_channels=256, embed_dims=64, num_heads=4))
train_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=False,
    dataset=dict(
        data_root={data!r}, indices=16,
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='RandomResizedCrop', scale=64,
                 crop_ratio_range=(0.2, 1.0), backend='pillow',
                 interpolation='bicubic'),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackInputs')
        ]))
train_cfg = dict(max_epochs={epochs})
custom_hooks = [dict(type='ResumeProbeHook')]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=1, max_keep_ckpts=5))
'''


@pytest.fixture(scope='module')
def setup(repo_root, demo_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('resume')
    (tmp / 'resume_probe.py').write_text(PROBE)
    cfg = tmp / 'cfg.py'
    cfg.write_text(CFG.format(base=osp.join(repo_root, 'configs', DEMO_CFG),
                              data=demo_data, epochs=EPOCHS))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=os.pathsep.join(
        [str(tmp), repo_root, os.environ.get('PYTHONPATH', '')]))
    return tmp, cfg, env


def _cmd(repo_root, cfg, work, *extra):
    return [sys.executable, osp.join(repo_root, 'tools', 'train.py'),
            str(cfg), '--work-dir', str(work), *extra]


def _records(work):
    with open(work / 'probe.jsonl') as f:
        return [json.loads(line) for line in f if line.endswith('\n')]


def _check(proc, log_path):
    assert proc.wait() == 0, log_path.read_text()[-4000:]
    return log_path.read_text()


@pytest.fixture(scope='module')
def runs(repo_root, setup):
    """An uninterrupted run, and in parallel one SIGKILLed as soon as its
    first checkpoint is complete and then resumed with ``--resume``."""
    tmp, cfg, env = setup
    ref, work = tmp / 'reference', tmp / 'crashed'
    logs = [open(tmp / f'{n}.log', 'w') for n in ('ref', 'crash')]
    procs = [subprocess.Popen(_cmd(repo_root, cfg, w), env=env,
                              cwd=repo_root, stdout=log,
                              stderr=subprocess.STDOUT)
             for w, log in zip((ref, work), logs)]
    # CheckpointHook writes `last_checkpoint` after the .pth is complete
    marker = work / 'last_checkpoint'
    deadline = time.time() + 240
    while not marker.exists() and procs[1].poll() is None \
            and time.time() < deadline:
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGKILL)
    rc = procs[1].wait()
    for log in logs:
        log.close()
    assert marker.exists(), (tmp / 'crash.log').read_text()[-4000:]
    assert rc == -signal.SIGKILL, 'the run finished before it was killed'
    assert not (work / f'epoch_{EPOCHS}.pth').exists()
    ckpt = marker.read_text().strip()
    n_before = len(_records(work))

    with open(tmp / 'resume.log', 'w') as log:
        resume = subprocess.Popen(_cmd(repo_root, cfg, work, '--resume'),
                                  env=env, cwd=repo_root, stdout=log,
                                  stderr=subprocess.STDOUT)
        log_text = _check(resume, tmp / 'resume.log')
    _check(procs[0], tmp / 'ref.log')
    return ref, work, ckpt, n_before, log_text


def test_masks_depend_on_run_seed_and_iteration_only():
    """GreenMIM's masks under a Runner: a function of (seed, iter)."""
    from mmengine.logging import MessageHub
    from mmpretrain.registry import MODELS

    import greenmim_mm  # noqa: F401
    model = MODELS.build(
        dict(type='GreenMIM',
             backbone=dict(type='GreenSwinTransformer', arch=dict(
                 embed_dims=16, depths=[2, 2, 2, 2],
                 num_heads=[1, 1, 1, 1])),
             neck=dict(type='GreenMIMDecoder', in_channels=128,
                       embed_dims=32, num_heads=1),
             head=dict(type='GreenMIMHead', patch_size=32,
                       loss=dict(type='PixelReconstructionLoss',
                                 criterion='L2'))))
    hub = MessageHub.get_current_instance()

    def draw(iteration):
        hub.update_info('iter', iteration)
        return torch.rand(64, generator=model.mask_generator())

    try:
        torch.manual_seed(3)
        a5, a6 = draw(5), draw(6)
        torch.rand(10)  # the global RNG moves on: no effect
        model._mask_iter = None
        assert torch.equal(draw(5), a5) and not torch.equal(a5, a6)
        torch.manual_seed(4)  # another run seed (or rank)
        assert not torch.equal(draw(5), a5)
        assert model.mask_generator() is None  # same iter again: stale
        model.eval()
        assert model.mask_generator() is None
    finally:
        hub.update_info('iter', None)
    model.train()
    assert model.mask_generator() is None


def test_resume_continues_from_the_checkpoint(runs):
    _, work, ckpt, n_before, log = runs
    assert f'resumed epoch: 1, iter: {ITERS_PER_EPOCH}' in log, log[-3000:]
    assert osp.basename(ckpt) == 'epoch_1.pth'
    new = _records(work)[n_before:]
    # the resumed process starts exactly after the checkpoint
    assert [r['iter'] for r in new] == list(
        range(ITERS_PER_EPOCH, EPOCHS * ITERS_PER_EPOCH))
    assert (work / f'epoch_{EPOCHS}.pth').exists()


def test_resumed_run_matches_uninterrupted_run(runs):
    reference, work, _, n_before, _ = runs
    ref = _records(reference)
    assert len(ref) == EPOCHS * ITERS_PER_EPOCH
    new = _records(work)[n_before:]
    ref_after = ref[ITERS_PER_EPOCH:]
    # same schedule and same data order ...
    assert [r['lr'] for r in new] == [r['lr'] for r in ref_after]
    assert [r['files'] for r in new] == [r['files'] for r in ref_after]
    # ... same augmentation, masks, weights and optimiser state: same loss
    for a, b in zip(new, ref_after):
        assert a['loss'] == pytest.approx(b['loss'], rel=1e-5, abs=1e-6), \
            (a, b)
    final = torch.load(work / 'final_rank0.pth')
    final_ref = torch.load(reference / 'final_rank0.pth')
    for k, v in final_ref.items():
        torch.testing.assert_close(final[k], v, rtol=1e-4, atol=1e-6,
                                   msg=k)


def test_optimizer_state_is_restored(runs):
    """The resumed run's last checkpoint carries the full AdamW state,
    with the step count of the whole run, like the reference."""
    import greenmim_mm
    reference, work = runs[:2]
    last = greenmim_mm.safe_load(str(work / f'epoch_{EPOCHS}.pth'))
    ref = greenmim_mm.safe_load(str(reference / f'epoch_{EPOCHS}.pth'))
    assert last['meta']['iter'] == ref['meta']['iter'] == \
        EPOCHS * ITERS_PER_EPOCH
    opt, opt_ref = last['optimizer']['state'], ref['optimizer']['state']
    assert opt.keys() == opt_ref.keys() and len(opt) > 100
    for k, st in opt_ref.items():
        assert float(opt[k]['step']) == float(st['step']) == \
            EPOCHS * ITERS_PER_EPOCH
        torch.testing.assert_close(opt[k]['exp_avg_sq'], st['exp_avg_sq'],
                                   rtol=1e-3, atol=1e-12)
    assert last['param_schedulers'] == ref['param_schedulers']
