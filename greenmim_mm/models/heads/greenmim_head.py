"""Pixel reconstruction head for any unit grid (square or not)."""
from typing import Tuple

from mmpretrain.models.heads import MAEPretrainHead
from mmpretrain.registry import MODELS
from torch import Tensor

from ..utils.masking import patchify, unpatchify


@MODELS.register_module()
class GreenMIMHead(MAEPretrainHead):
    """MAE's pixel head, extended to non-square images.

    GreenMIM: `Green Hierarchical Vision Transformer for Masked Image
    Modeling <https://arxiv.org/abs/2205.13515>`_. The loss is mmpretrain's
    (norm_pix targets, ``PixelReconstructionLoss`` on masked units only);
    only patchify and unpatchify change, so rectangular inputs work.

    Args:
        loss (dict): Loss config.
        norm_pix (bool): Normalise every unit's target pixels.
            Defaults to True.
        patch_size (int): Unit side in pixels. Defaults to 32.
        in_channels (int): Image channels. Defaults to 3.
    """

    def __init__(self,
                 loss: dict = dict(type='PixelReconstructionLoss',
                                   criterion='L2'),
                 norm_pix: bool = True,
                 patch_size: int = 32,
                 in_channels: int = 3) -> None:
        super().__init__(loss=loss, norm_pix=norm_pix,
                         patch_size=patch_size, in_channels=in_channels)

    def patchify(self, imgs: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, L, p*p*C)``, units in row-major order."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: Tensor, grid_hw: Tuple[int, int] = None
                   ) -> Tensor:
        """``(B, L, p*p*C)`` -> ``(B, C, H, W)``.

        Args:
            x (Tensor): Units in row-major order.
            grid_hw (tuple[int, int], optional): Unit grid; square if None.
        """
        if grid_hw is None:
            return super().unpatchify(x)
        return unpatchify(x, grid_hw, self.patch_size, self.in_channels)
