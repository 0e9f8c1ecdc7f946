"""The GreenMIM algorithm: thin glue around backbone, decoder and head."""
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.logging import MessageHub
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..utils.masking import (check_mask_ratio, random_unit_mask, restore_ids,
                             unit_grid)
from ..utils.transfer import to_device
from .config_check import check_greenmim_parts
from .plan_prefetch import PlanPrefetcher, iteration_generator, warm_plans


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
    With ``prefetch_plans``, iteration ``i + 1``'s masks and grouping plans
    are made in a background thread during iteration ``i`` (the same masks,
    off the critical path; see :mod:`.plan_prefetch`).

    Args:
        backbone (dict): A Green backbone config (takes ``mask=``).
        neck (dict): Decoder config, e.g. ``GreenMIMDecoder``.
        head (dict): Head config, e.g. ``GreenMIMHead``.
        mask_ratio (float): Fraction of units masked, in (0, 1).
            Defaults to 0.75.
        prefetch_plans (bool): Make the next iteration's masks and plans
            in a background thread while a Runner trains. Meant for GPUs,
            where the main thread waits for the device; on a CPU the thread
            competes with the compute. Defaults to False.
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
                 prefetch_plans: bool = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        self.mask_ratio = check_mask_ratio(mask_ratio)
        if not isinstance(prefetch_plans, bool):
            raise TypeError('GreenMIM prefetch_plans must be True or False, '
                            f'got {prefetch_plans!r}.')
        super().__init__(backbone=backbone, neck=neck, head=head,
                         data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg, **kwargs)
        check_greenmim_parts(self.backbone, getattr(self, 'neck', None),
                             getattr(self, 'head', None))
        self._mask_iter = None  # Runner iteration of the last masks drawn
        self.prefetch_plans = prefetch_plans
        self._prefetcher = PlanPrefetcher()

    def _runner_iteration(self) -> Optional[int]:
        """The Runner's training iteration (``MessageHub`` info ``iter``,
        which a resumed Runner restores), or None outside Runner training
        (no ``iter`` info, or the same one as at the previous call)."""
        if not self.training:
            return None
        iteration = MessageHub.get_current_instance().get_info('iter')
        # a Runner moves on every step; a stale hub (a loop after a Runner
        # in the same process) does not
        last, self._mask_iter = self._mask_iter, iteration
        if iteration is None or iteration == last:
            return None
        return int(iteration)

    def mask_generator(self) -> Optional[torch.Generator]:
        """CPU generator for this training iteration's masks.

        Returns:
            torch.Generator, optional: Seeded by the process's torch seed
            and the Runner's iteration, or None outside Runner training
            (then masks come from torch's global RNG).
        """
        iteration = self._runner_iteration()
        if iteration is None:
            return None
        return iteration_generator(torch.initial_seed(), iteration)

    def _masks_and_plans(self, batch: int, grid: Tuple[int, int],
                         img_hw: Tuple[int, int], device: torch.device):
        """``(mask, plans)`` of this step; plans None = made in forward."""
        iteration = self._runner_iteration()
        if iteration is None:
            return random_unit_mask(batch, grid, self.mask_ratio), None
        seed = torch.initial_seed()
        if not self.prefetch_plans:
            return random_unit_mask(
                batch, grid, self.mask_ratio,
                generator=iteration_generator(seed, iteration)), None

        def job(it: int):
            mask = random_unit_mask(batch, grid, self.mask_ratio,
                                    generator=iteration_generator(seed, it))
            plans = self.backbone.make_plans(mask, img_hw)
            warm_plans(plans, device)
            return mask, plans

        key = (batch, grid, tuple(img_hw), seed)
        ready = self._prefetcher.take(key + (iteration, ))
        self._prefetcher.submit(key + (iteration + 1, ),
                                lambda: job(iteration + 1))
        return ready if ready is not None else job(iteration)

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
        mask, plans = self._masks_and_plans(
            inputs.shape[0], grid, tuple(inputs.shape[-2:]), inputs.device)
        # every host-to-device copy is queued before the encoder's first
        # kernel, from pinned memory (see to_device): the host never waits
        ids_restore = to_device(restore_ids(mask), inputs.device)  # (B, L)
        unit_mask = to_device(mask, inputs.device)  # (B, L) bool
        feats = self.backbone(inputs, mask=mask, plans=plans)
        pred = self.neck(feats[-1], ids_restore, grid)
        return dict(
            loss=self.head.loss(pred, inputs, unit_mask.to(pred.dtype)))
