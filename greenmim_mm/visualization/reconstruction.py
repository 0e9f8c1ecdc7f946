"""Reconstruction panels of a GreenMIM model (pure functions).

For a batch of normalised images and a unit mask (1 = masked), four panels
are made per image, as in MAE's visualisation:

1. ``original``: the input image;
2. ``masked``: the input with every masked unit greyed out;
3. ``reconstruction``: the predicted pixels of every unit; with
   ``norm_pix`` the prediction of a unit is de-normalised with that unit's
   own true mean and standard deviation (the statistics the loss
   normalised its target with);
4. ``pasted``: visible units keep their original pixels, masked units show
   the reconstruction.

All panels are ``(B, 3, H, W)`` uint8 RGB images (the data preprocessor's
mean/std undone).
"""
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from ..utils_io import atomic_write
from ..models.utils.masking import (patchify, random_unit_mask, restore_ids,
                                    unit_grid, unpatchify)

#: panel names, in the order they are drawn
PANELS = ('original', 'masked', 'reconstruction', 'pasted')
#: RGB value of a masked unit in the ``masked`` panel
GREY = 128


def unit_stats(target_units: Tensor, eps: float = 1e-6
               ) -> Tuple[Tensor, Tensor]:
    """Per-unit mean and std exactly as mmpretrain's norm_pix target uses.

    Args:
        target_units (Tensor): ``(B, L, D)`` true pixels of every unit.
        eps (float): Added to the variance. Defaults to 1e-6.

    Returns:
        tuple[Tensor, Tensor]: ``(B, L, 1)`` mean and ``sqrt(var + eps)``
        (unbiased variance, as in ``MAEPretrainHead.construct_target``).
    """
    mean = target_units.mean(dim=-1, keepdim=True)
    var = target_units.var(dim=-1, keepdim=True)
    return mean, (var + eps)**.5


def denormalize_units(pred: Tensor, target_units: Tensor,
                      eps: float = 1e-6) -> Tensor:
    """Undo norm_pix: map a normalised prediction of every unit back to
    pixels with the unit's own true mean and std.

    Args:
        pred (Tensor): ``(B, L, D)`` predicted normalised units.
        target_units (Tensor): ``(B, L, D)`` true pixels of every unit.
        eps (float): Added to the variance. Defaults to 1e-6.

    Returns:
        Tensor: ``(B, L, D)`` predicted pixels.
    """
    if pred.shape != target_units.shape:
        raise ValueError(f'pred {tuple(pred.shape)} and target '
                         f'{tuple(target_units.shape)} differ in shape.')
    mean, std = unit_stats(target_units, eps)
    return pred * std + mean


def pixel_mask(mask: Tensor, grid_hw: Tuple[int, int], unit: int) -> Tensor:
    """Expand a unit mask to pixels.

    Args:
        mask (Tensor): ``(B, Hu * Wu)`` or ``(B, Hu, Wu)``, 1 = masked.
        grid_hw (tuple[int, int]): Unit grid ``(Hu, Wu)``.
        unit (int): Unit side in pixels.

    Returns:
        Tensor: ``(B, 1, Hu * unit, Wu * unit)`` bool, True = masked.
    """
    b = mask.shape[0]
    if mask[0].numel() != grid_hw[0] * grid_hw[1]:
        raise ValueError(f'mask of shape {tuple(mask.shape)} does not match '
                         f'a {grid_hw[0]}x{grid_hw[1]} unit grid.')
    m = mask.reshape(b, 1, grid_hw[0], 1, grid_hw[1], 1).bool()
    m = m.expand(-1, -1, -1, unit, -1, unit)  # (B, 1, Hu, p, Wu, p)
    return m.reshape(b, 1, grid_hw[0] * unit, grid_hw[1] * unit)


def to_uint8(imgs: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Undo the data preprocessor's normalisation.

    Args:
        imgs (Tensor): ``(B, 3, H, W)`` normalised images.
        mean (Tensor): Per-channel mean, broadcastable to ``(3, 1, 1)``.
        std (Tensor): Per-channel std, broadcastable to ``(3, 1, 1)``.

    Returns:
        Tensor: ``(B, 3, H, W)`` uint8, clamped to [0, 255].
    """
    mean = torch.as_tensor(mean, dtype=imgs.dtype,
                           device=imgs.device).reshape(-1, 1, 1)
    std = torch.as_tensor(std, dtype=imgs.dtype,
                          device=imgs.device).reshape(-1, 1, 1)
    return (imgs * std + mean).round().clamp_(0, 255).to(torch.uint8)


def make_panels(inputs: Tensor, pred: Tensor, mask: Tensor, unit: int,
                mean: Tensor, std: Tensor, norm_pix: bool = True
                ) -> Dict[str, Tensor]:
    """The four panels of every image (see the module docstring).

    Args:
        inputs (Tensor): ``(B, 3, H, W)`` normalised images.
        pred (Tensor): ``(B, L, unit * unit * 3)`` decoder output, units in
            row-major order (normalised units when ``norm_pix``).
        mask (Tensor): ``(B, L)`` unit mask, 1 = masked.
        unit (int): Mask-unit side in pixels.
        mean (Tensor): Data preprocessor's per-channel mean.
        std (Tensor): Data preprocessor's per-channel std.
        norm_pix (bool): Whether ``pred`` is per-unit normalised.
            Defaults to True.

    Returns:
        dict[str, Tensor]: ``{name: (B, 3, H, W) uint8}`` for ``PANELS``.
    """
    grid = unit_grid(inputs.shape[-2:], unit)
    inputs = inputs.float()
    pred = pred.float()
    if norm_pix:
        pred = denormalize_units(pred, patchify(inputs, unit))
    recon = unpatchify(pred, grid, unit, inputs.shape[1])  # (B, 3, H, W)
    m = pixel_mask(mask, grid, unit)  # (B, 1, H, W)
    original = to_uint8(inputs, mean, std)
    masked = original.masked_fill(m, GREY)
    return dict(
        original=original,
        masked=masked,
        reconstruction=to_uint8(recon, mean, std),
        pasted=to_uint8(torch.where(m, recon, inputs), mean, std))


def fixed_mask(batch_size: int, grid_hw: Tuple[int, int], mask_ratio: float,
               seed: int = 0) -> Tensor:
    """A reproducible random unit mask (CPU, own generator).

    Args:
        batch_size (int): Number of images.
        grid_hw (tuple[int, int]): Unit grid.
        mask_ratio (float): Fraction of units masked.
        seed (int): Seed of the generator. Defaults to 0.

    Returns:
        Tensor: ``(B, Hu * Wu)`` bool mask, True = masked.
    """
    gen = torch.Generator().manual_seed(int(seed))
    return random_unit_mask(batch_size, grid_hw, mask_ratio, generator=gen)


@torch.no_grad()
def predict_units(model: nn.Module, inputs: Tensor, mask: Tensor) -> Tensor:
    """Run a GreenMIM model's backbone (visible units only) and decoder.

    Args:
        model (nn.Module): A ``GreenMIM`` (backbone with ``mask_unit``,
            neck, head).
        inputs (Tensor): ``(B, 3, H, W)`` normalised images.
        mask (Tensor): ``(B, L)`` unit mask, 1 = masked.

    Returns:
        Tensor: ``(B, L, unit * unit * 3)`` predicted units, grid order.
    """
    grid = unit_grid(inputs.shape[-2:], model.backbone.mask_unit)
    mask = mask.reshape(mask.shape[0], -1).cpu()
    feats = model.backbone(inputs, mask=mask)
    ids_restore = restore_ids(mask).to(inputs.device)
    return model.neck(feats[-1], ids_restore, grid)


def reconstruct(model: nn.Module, inputs: Tensor, mask: Tensor
                ) -> Dict[str, Tensor]:
    """Panels of a GreenMIM model for normalised images and a mask.

    The model is run in eval mode (and put back in its previous mode).

    Args:
        model (nn.Module): A ``GreenMIM`` model (unwrapped).
        inputs (Tensor): ``(B, 3, H, W)`` images, already normalised by
            ``model.data_preprocessor``.
        mask (Tensor): ``(B, L)`` unit mask, 1 = masked.

    Returns:
        dict[str, Tensor]: See :func:`make_panels`.
    """
    was_training = model.training
    model.eval()
    try:
        pred = predict_units(model, inputs, mask)
    finally:
        model.train(was_training)
    pre = model.data_preprocessor
    mean = getattr(pre, 'mean', None)
    std = getattr(pre, 'std', None)
    if mean is None or std is None:  # preprocessor without normalisation
        mean, std = torch.zeros(3), torch.ones(3)
    return make_panels(inputs, pred, mask.to(inputs.device),
                       model.backbone.mask_unit, mean.cpu(), std.cpu(),
                       norm_pix=bool(getattr(model.head, 'norm_pix', False)))


def panel_grid(panels: Dict[str, Tensor],
               names: Sequence[str] = PANELS,
               gap: int = 4,
               titles: bool = True) -> np.ndarray:
    """Lay panels out as one row per image, one column per panel.

    Args:
        panels (dict[str, Tensor]): Output of :func:`make_panels`.
        names (Sequence[str]): Panels to draw, left to right.
            Defaults to ``PANELS``.
        gap (int): White pixels between panels. Defaults to 4.
        titles (bool): Write the panel names in a header row.
            Defaults to True.

    Returns:
        np.ndarray: ``(rows, cols, 3)`` uint8 RGB image of
        ``B * H + (B + 1) * gap (+ header)`` by ``n * W + (n + 1) * gap``.
    """
    imgs = [panels[n].cpu() for n in names]
    b, _, h, w = imgs[0].shape
    header = 14 if titles else 0
    rows = header + b * h + (b + 1) * gap
    cols = len(names) * w + (len(names) + 1) * gap
    canvas = np.full((rows, cols, 3), 255, dtype=np.uint8)
    for j, img in enumerate(imgs):
        x0 = gap + j * (w + gap)
        for i in range(b):
            y0 = header + gap + i * (h + gap)
            canvas[y0:y0 + h, x0:x0 + w] = img[i].permute(1, 2, 0).numpy()
    if titles:
        pil = Image.fromarray(canvas)
        draw = ImageDraw.Draw(pil)
        for j, name in enumerate(names):
            draw.text((gap + j * (w + gap) + 2, 2), name, fill=(0, 0, 0))
        canvas = np.asarray(pil).copy()
    return canvas


def save_png(image: np.ndarray, path: str) -> str:
    """Write an RGB uint8 array as PNG, creating the folder.

    The file is written to a temporary file and renamed (no half-written
    PNG after an interruption).

    Args:
        image (np.ndarray): ``(H, W, 3)`` uint8.
        path (str): Output file; must end with ``.png``.

    Returns:
        str: ``path``.

    Raises:
        ValueError: If ``path`` does not end with ``.png``.
    """
    check_png_name(path)
    with atomic_write(path) as tmp:
        Image.fromarray(image).save(tmp, format='PNG')
    return path


def check_png_name(path: str) -> str:
    """Raise unless ``path`` ends with ``.png`` (the bytes written are PNG).

    Args:
        path (str): Output file.

    Returns:
        str: ``path``.
    """
    if osp.splitext(str(path))[1].lower() != '.png':
        raise ValueError(f'Output {path!r} must end with .png: the file '
                         'written is a PNG image.')
    return path


def stack_inputs(inputs) -> Tensor:
    """A batch of images from a collated or uncollated ``inputs`` entry.

    Args:
        inputs (Tensor | list[Tensor]): ``(B, 3, H, W)`` or a list of
            ``(3, H, W)`` tensors of one size.

    Returns:
        Tensor: ``(B, 3, H, W)``.
    """
    if isinstance(inputs, Tensor):
        return inputs
    if isinstance(inputs, (list, tuple)) and inputs and all(
            isinstance(t, Tensor) for t in inputs):
        if all(t.dim() == 4 for t in inputs):  # multi-view: first view
            return inputs[0]
        return torch.stack(list(inputs))
    raise TypeError('Expected the batch inputs to be a tensor or a list of '
                    f'tensors, got {type(inputs).__name__}.')


__all__: List[str] = [
    'PANELS', 'GREY', 'patchify', 'unpatchify', 'unit_stats',
    'denormalize_units', 'pixel_mask', 'to_uint8', 'make_panels',
    'fixed_mask', 'predict_units', 'reconstruct', 'panel_grid', 'save_png',
    'check_png_name', 'stack_inputs'
]
