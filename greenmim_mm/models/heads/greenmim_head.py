"""Pixel reconstruction head for any unit grid (square or not)."""
from typing import Tuple

from mmpretrain.models.heads import MAEPretrainHead
from mmpretrain.registry import MODELS
from torch import Tensor


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
        p, c = self.patch_size, self.in_channels
        b, _, hh, ww = imgs.shape
        h, w = hh // p, ww // p
        x = imgs.reshape(b, c, h, p, w, p)
        x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
        return x.reshape(b, h * w, p * p * c)

    def unpatchify(self, x: Tensor, grid_hw: Tuple[int, int] = None
                   ) -> Tensor:
        """``(B, L, p*p*C)`` -> ``(B, C, H, W)``.

        Args:
            x (Tensor): Units in row-major order.
            grid_hw (tuple[int, int], optional): Unit grid; square if None.
        """
        p, c = self.patch_size, self.in_channels
        if grid_hw is None:
            return super().unpatchify(x)
        h, w = grid_hw
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
        return x.reshape(x.shape[0], c, h * p, w * p)
