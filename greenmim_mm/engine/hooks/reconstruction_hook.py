"""Save reconstruction grids of a fixed image batch during training."""
import os.path as osp
from typing import Optional, Sequence

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ...models.utils.masking import check_mask_ratio, unit_grid
from ...visualization.reconstruction import (fixed_mask, panel_grid,
                                             reconstruct, save_png,
                                             stack_inputs)


@HOOKS.register_module()
class ReconstructionVisHook(Hook):
    """Write a grid of GreenMIM reconstructions every ``interval`` iterations.

    GreenMIM: `Green Hierarchical Vision Transformer for Masked Image
    Modeling <https://arxiv.org/abs/2205.13515>`_.

    The first ``num_images`` images of the first training batch are kept,
    and each grid uses the same fixed-seed mask, so successive grids
    (``<work_dir>/<out_dir>/iter_XXXXXX.png``) show the same images and
    units and differ only by the model's progress. Each row shows one
    image: original, masked input, reconstruction (norm_pix undone per
    unit) and reconstruction pasted into the visible units. Runs on rank 0
    only, in eval mode and without gradients. Off unless added to
    ``custom_hooks``::

        custom_hooks = [dict(type='ReconstructionVisHook', interval=100)]

    Args:
        interval (int): Save every ``interval`` training iterations.
            Defaults to 100.
        num_images (int): Images shown (rows). Defaults to 4.
        mask_ratio (float, optional): Mask ratio of the shown mask.
            Defaults to None (the model's ``mask_ratio``).
        seed (int): Seed of the fixed mask. Defaults to 0.
        out_dir (str): Folder under ``work_dir``. Defaults to 'vis'.
    """

    priority = 'LOW'

    def __init__(self,
                 interval: int = 100,
                 num_images: int = 4,
                 mask_ratio: Optional[float] = None,
                 seed: int = 0,
                 out_dir: str = 'vis') -> None:
        for name, value in (('interval', interval),
                            ('num_images', num_images)):
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 1:
                raise ValueError(f'ReconstructionVisHook {name} must be a '
                                 f'positive integer, got {value!r}.')
        self.interval = interval
        self.num_images = num_images
        self.mask_ratio = None if mask_ratio is None else \
            check_mask_ratio(mask_ratio)
        self.seed = int(seed)
        self.out_dir = out_dir
        self._batch: Optional[dict] = None
        self._mask: Optional[torch.Tensor] = None

    def _keep(self, data_batch) -> None:
        """Keep the first ``num_images`` images of ``data_batch``."""
        if not isinstance(data_batch, dict) or 'inputs' not in data_batch:
            raise TypeError('ReconstructionVisHook expects collated batches '
                            "with an 'inputs' key (default_collate).")
        inputs = stack_inputs(data_batch['inputs'])[:self.num_images]
        samples = data_batch.get('data_samples', None)
        if isinstance(samples, Sequence):
            samples = list(samples[:inputs.shape[0]])
        self._batch = dict(inputs=inputs.clone(), data_samples=samples)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        """Keep the first batch; save a grid every ``interval`` iters."""
        if self._batch is None and data_batch is not None:
            self._keep(data_batch)
        if self._batch is None or not is_main_process() or \
                not self.every_n_train_iters(runner, self.interval):
            return
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        self.save_grid(model, osp.join(runner.work_dir, self.out_dir,
                                       f'iter_{runner.iter + 1:06d}.png'))

    @torch.no_grad()
    def save_grid(self, model: torch.nn.Module, path: str) -> str:
        """Reconstruct the kept batch with the fixed mask and save a PNG.

        Args:
            model (nn.Module): The (unwrapped) GreenMIM model.
            path (str): Output PNG.

        Returns:
            str: ``path``.
        """
        inputs = model.data_preprocessor(self._batch, False)['inputs']
        inputs = stack_inputs(inputs)
        if self._mask is None:
            grid = unit_grid(inputs.shape[-2:], model.backbone.mask_unit)
            ratio = self.mask_ratio if self.mask_ratio is not None \
                else model.mask_ratio
            self._mask = fixed_mask(inputs.shape[0], grid, ratio, self.seed)
        panels = reconstruct(model, inputs, self._mask)
        return save_png(panel_grid(panels), path)
