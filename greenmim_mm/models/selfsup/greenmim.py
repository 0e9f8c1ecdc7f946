"""The GreenMIM algorithm: thin glue around backbone, decoder and head."""
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.logging import MessageHub
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..utils.masking import (check_mask_ratio, random_unit_mask, restore_ids,
                             unit_grid)


@MODELS.register_module()
class GreenMIM(BaseSelfSupervisor):
    """GreenMIM pretraining.

    `Green Hierarchical Vision Transformer for Masked Image Modeling
    <https://arxiv.org/abs/2205.13515>`_ (NeurIPS 2022).

    Every sample gets its own random mask on the mask-unit grid (1 =
    masked). The backbone sees the visible units only, the neck rebuilds
    every unit, and the head scores the masked units.

    While an mmengine Runner trains, the masks of iteration ``i`` come from
    a generator seeded by ``(torch.initial_seed(), i)`` (the run seed, plus
    the rank with ``diff_rank_seed``), so a resumed run draws the same
    masks as an uninterrupted one. Outside a Runner, torch's global RNG.

    Args:
        backbone (dict): A Green backbone config (takes ``mask=``).
        neck (dict): Decoder config, e.g. ``GreenMIMDecoder``.
        head (dict): Head config, e.g. ``GreenMIMHead``.
        mask_ratio (float): Fraction of units masked, in (0, 1).
            Defaults to 0.75.
        data_preprocessor (dict, optional): Defaults to None
            (``SelfSupDataPreprocessor``).
        init_cfg (dict, optional): Initialization config. Defaults to None.
        **kwargs: Other arguments of ``BaseSelfSupervisor``.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 mask_ratio: float = 0.75,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        self.mask_ratio = check_mask_ratio(mask_ratio)
        super().__init__(backbone=backbone, neck=neck, head=head,
                         data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg, **kwargs)
        self._mask_iter = None  # Runner iteration of the last masks drawn

    def mask_generator(self) -> Optional[torch.Generator]:
        """CPU generator for this training iteration's masks.

        Returns:
            torch.Generator, optional: Seeded by the process's torch seed
            and the Runner's iteration (``MessageHub`` info ``iter``, which
            a resumed Runner restores), or None outside Runner training
            (no ``iter`` info, or the same one as at the previous call).
        """
        if not self.training:
            return None
        iteration = MessageHub.get_current_instance().get_info('iter')
        # a Runner moves on every step; a stale hub (a loop after a Runner
        # in the same process) does not: use the global RNG then
        last, self._mask_iter = self._mask_iter, iteration
        if iteration is None or iteration == last:
            return None
        seed = np.random.SeedSequence(
            [torch.initial_seed(), int(iteration)]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(seed))

    def extract_feat(self, inputs: torch.Tensor):
        """Dense features (no mask), as for downstream use."""
        return self.backbone(inputs)

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        """Masked reconstruction loss of a batch.

        Args:
            inputs (torch.Tensor): ``(B, 3, H, W)`` normalised images.
            data_samples (list[DataSample]): Unused.

        Returns:
            dict[str, Tensor]: ``{'loss': ...}``.
        """
        grid = unit_grid(inputs.shape[-2:], self.backbone.mask_unit)
        # masks are drawn and planned on the CPU: no host-device sync
        mask = random_unit_mask(inputs.shape[0], grid, self.mask_ratio,
                                generator=self.mask_generator())
        feats = self.backbone(inputs, mask=mask)
        ids_restore = restore_ids(mask).to(inputs.device, non_blocking=True)
        pred = self.neck(feats[-1], ids_restore, grid)
        mask = mask.to(inputs.device, non_blocking=True)
        return dict(loss=self.head.loss(pred, inputs, mask.to(pred.dtype)))
