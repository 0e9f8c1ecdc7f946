#!/usr/bin/env python
"""Train with an mmengine Runner: the entry point of the shell wrappers.

A thin copy of mmpretrain's ``tools/train.py`` (which ``mim train
mmpretrain`` runs) that imports :mod:`greenmim_mm` first, so our models and
safe checkpoint loader are registered before the config is built.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [auto|PATH]]
        [--amp] [--auto-scale-lr] [--cfg-options k=v ...]
        [--launcher none|pytorch|slurm|mpi]
    tools/dist_train.sh CONFIG GPUS [args]             # torchrun
    tools/slurm_train.sh PARTITION JOB_NAME CONFIG [args]  # srun

Without a GPU, ``--launcher pytorch`` runs every process on the CPU with
the gloo backend (mmengine itself would call ``torch.cuda.set_device``).
"""
import argparse
import datetime
import os
import os.path as osp
import sys

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
import greenmim_mm  # noqa: E402,F401  registers models and the safe loader


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a GreenMIM model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a path, resume from '
        'the latest checkpoint in the work directory')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper)')
    parser.add_argument(
        '--auto-scale-lr', action='store_true',
        help='scale the lr by total batch size / auto_scale_lr.'
        'base_batch_size')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value (e.g. '
        'train_dataloader.batch_size=64)')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Apply the command-line arguments to the config."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join(
            './work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(
                f'--resume {args.resume}: no such checkpoint file.')
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        if cfg.get('auto_scale_lr') is None:
            raise ValueError('--auto-scale-lr needs auto_scale_lr='
                             'dict(base_batch_size=...) in the config.')
        cfg.auto_scale_lr.enable = True
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(name) is not None:  # mmpretrain's default, GPU only
            cfg[name].setdefault('pin_memory', torch.cuda.is_available())
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def setup_cpu_dist(cfg: Config) -> None:
    """Run a ``--launcher pytorch`` job on the CPU with gloo.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device``, and its DDP
    wrapper passes ``device_ids=[LOCAL_RANK]``; both fail without a GPU. So
    initialise the process group here (the Runner then skips it) and let
    DDP keep the model on the CPU.
    """
    if cfg.launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {cfg.launcher} needs GPUs and none is visible; '
            'for a CPU-only run use --launcher pytorch (torchrun, '
            'tools/dist_train.sh).')
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    if dist_cfg.get('backend', 'gloo') != 'gloo':
        print(f"No GPU: using the gloo backend instead of "
              f"{dist_cfg['backend']!r}.", flush=True)
    dist_cfg['backend'] = 'gloo'
    cfg.env_cfg = dict(cfg.get('env_cfg', {}), dist_cfg=dist_cfg)
    if not dist.is_initialized():
        timeout = dist_cfg.get('timeout')
        dist.init_process_group(
            backend='gloo', **({} if timeout is None else dict(
                timeout=datetime.timedelta(seconds=timeout))))
    wrapper = dict(cfg.get('model_wrapper_cfg') or
                   dict(type='MMDistributedDataParallel',
                        broadcast_buffers=False,
                        find_unused_parameters=cfg.get(
                            'find_unused_parameters', False)))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = merge_args(Config.fromfile(args.config), args)
    if cfg.launcher != 'none' and not torch.cuda.is_available():
        setup_cpu_dist(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg \
        else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
