"""MAE-style decoder on the mask-unit grid of a hierarchical encoder."""
from typing import Dict, Optional, Tuple

import torch
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, ModuleList
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.backbones.vision_transformer import \
    TransformerEncoderLayer
from mmpretrain.models.utils import build_2d_sincos_position_embedding
from mmpretrain.registry import MODELS
from torch import Tensor, nn

from ..utils.transfer import to_device


@MODELS.register_module()
class GreenMIMDecoder(BaseModule):
    """Light decoder of GreenMIM.

    GreenMIM: `Green Hierarchical Vision Transformer for Masked Image
    Modeling <https://arxiv.org/abs/2205.13515>`_.

    Visible last-stage tokens (one per mask unit) are projected to the
    decoder width, a learned mask token is placed at every masked unit, 2-D
    sin-cos positions of the unit grid are added, and a few transformer
    blocks predict the pixels of every unit.

    Args:
        in_channels (int): Width of the encoder's last stage.
            Defaults to 1024 (Swin-B).
        embed_dims (int): Decoder width. Defaults to 512.
        depth (int): Number of decoder blocks. Defaults to 1.
        num_heads (int): Attention heads. Defaults to 16.
        mlp_ratio (float): FFN expansion. Defaults to 4.
        unit_size (int): Mask unit side in pixels. Defaults to 32.
        in_chans (int): Image channels. Defaults to 3.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='LN',
            eps=1e-6)``.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 in_channels: int = 1024,
                 embed_dims: int = 512,
                 depth: int = 1,
                 num_heads: int = 16,
                 mlp_ratio: float = 4.,
                 unit_size: int = 32,
                 in_chans: int = 3,
                 norm_cfg: dict = dict(type='LN', eps=1e-6),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if embed_dims % 4:
            raise ValueError('GreenMIMDecoder embed_dims must be divisible '
                             f'by 4 (2-D sin-cos positions), got {embed_dims}.')
        self.embed_dims = embed_dims
        self.decoder_embed = nn.Linear(in_channels, embed_dims)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.decoder_blocks = ModuleList([
            TransformerEncoderLayer(
                embed_dims, num_heads, int(mlp_ratio * embed_dims),
                qkv_bias=True, norm_cfg=norm_cfg) for _ in range(depth)
        ])
        self.decoder_norm_name, decoder_norm = build_norm_layer(
            norm_cfg, embed_dims, postfix=1)
        self.add_module(self.decoder_norm_name, decoder_norm)
        self.decoder_pred = nn.Linear(embed_dims, unit_size**2 * in_chans)
        # sin-cos positions per (grid, device, dtype): built and copied to
        # the device once, not every step (a blocking host-device copy)
        self._pos_cache: Dict[tuple, Tensor] = {}

    def pos_embed(self, grid_hw: Tuple[int, int], like: Tensor) -> Tensor:
        """``(1, Hu * Wu, D)`` 2-D sin-cos positions of the unit grid, in
        row-major order, on ``like``'s device and dtype (cached)."""
        key = (tuple(grid_hw), like.device, like.dtype)
        pos = self._pos_cache.get(key)
        if pos is None:
            # mmpretrain's helper flattens (w, h) column-major; passing the
            # grid as (Wu, Hu) gives row-major positions for non-square
            # grids too.
            pos = build_2d_sincos_position_embedding(
                (grid_hw[1], grid_hw[0]), self.embed_dims).to(like.dtype)
            pos = to_device(pos, like.device)
            self._pos_cache[key] = pos
        return pos

    @property
    def decoder_norm(self) -> nn.Module:
        return getattr(self, self.decoder_norm_name)

    def init_weights(self) -> None:
        super().init_weights()
        if self.init_cfg is not None:
            return
        trunc_normal_(self.mask_token, std=.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

    def forward(self, x: Tensor, ids_restore: Tensor,
                grid_hw: Tuple[int, int]) -> Tensor:
        """Predict the pixels of every unit.

        Args:
            x (Tensor): ``(B, n_vis, C_in)`` visible last-stage tokens in
                ascending unit order.
            ids_restore (Tensor): ``(B, L)`` from
                :func:`greenmim_mm.models.utils.restore_ids`.
            grid_hw (tuple[int, int]): Unit grid ``(Hu, Wu)``, ``L = Hu*Wu``.

        Returns:
            Tensor: ``(B, L, unit_size**2 * in_chans)`` in grid order.
        """
        x = self.decoder_embed(x)  # (B, n_vis, D)
        b, n_vis, d = x.shape
        n_units = ids_restore.shape[1]
        tokens = torch.cat(
            [x, self.mask_token.to(x.dtype).expand(b, n_units - n_vis, d)],
            dim=1)  # (B, L, D) as [visible, masked]
        x = tokens.gather(1, ids_restore[..., None].expand(-1, -1, d))
        x = x + self.pos_embed(grid_hw, x)  # (1, L, D)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))
