"""What every Green backbone adds to its mmpretrain parent, in one place."""
from typing import Any, Optional, Tuple

from torch import Tensor

from ..utils.masking import check_batched
from .pretrained_check import init_weights_checked


class MaskedBackboneMixin:
    """``forward(x, mask=None, plans=None)`` and a checked ``Pretrained``.

    Put it first among the bases of a subclass of an mmpretrain backbone
    that defines ``forward_masked(x, mask, plans)``: without a mask the
    parent's dense forward runs unchanged; a ``Pretrained`` checkpoint of
    another architecture raises (see :mod:`.pretrained_check`).
    """

    def init_weights(self) -> None:
        """As the parent's, but a mismatching ``Pretrained`` raises."""
        init_weights_checked(self, super().init_weights)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None,
                plans: Optional[Any] = None) -> Tuple[Tensor]:
        """Forward.

        Args:
            x (Tensor): ``(B, 3, H, W)`` images.
            mask (Tensor, optional): ``(B, Hu * Wu)`` or ``(B, Hu, Wu)``
                unit mask, 1 = masked. None runs the dense parent forward.
                Defaults to None.
            plans (list, optional): Precomputed plans, from the backbone's
                ``make_plans``. Defaults to None (computed here).

        Returns:
            tuple[Tensor]: Dense: ``(B, C_i, H_i, W_i)`` per out index.
            Masked: ``(B, N_i, C_i)`` visible tokens per out index, ordered
            by visible unit (ascending) then Morton order inside the unit.
        """
        if mask is None:
            check_batched(x.shape)  # a (3, H, W) image would run unbatched
            return super().forward(x)
        return self.forward_masked(x, mask, plans)
