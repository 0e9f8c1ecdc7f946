#!/usr/bin/env python
"""Show what a GreenMIM model reconstructs from the visible mask units.

Writes one PNG per image with four panels: original, masked input (masked
32 px units grey), reconstruction (norm_pix undone with each unit's own
mean/std) and the reconstruction pasted into the visible pixels. Images get
the config's test preprocessing (resize + centre crop to the model's input
size, then the data preprocessor's mean/std).

Output names keep the source extension so they never clash: ``x.jpg`` and
``x.png`` of one folder give ``x.jpg.png`` and ``x.png.png``. The output
folder may not be the image folder, nor an input image; every file is
written through a temporary file and renamed. The checkpoint must be a
full GreenMIM pretraining checkpoint of this config: it is loaded
strictly, and missing or unexpected keys (an extracted backbone has no
decoder) are an error, not a reconstruction from random weights.

    python tools/visualize_reconstruction.py \
        configs/greenmim_swin-tiny-w7_1xb16-coslr-20e_demo.py \
        work_dirs/demo/epoch_20.pth data/demo/train --out work_dirs/vis
"""
import argparse
import os.path as osp
import sys
from typing import List

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('image', help='an image, or a folder of images')
    parser.add_argument('--out', default='work_dirs/vis_reconstruction',
                        help='output folder (default: %(default)s)')
    parser.add_argument('--mask-ratio', type=float, default=None,
                        help="mask ratio (default: the model's)")
    parser.add_argument('--seed', type=int, default=0,
                        help='mask seed (default: %(default)s)')
    parser.add_argument('--max-images', type=int, default=None,
                        help='at most this many images of a folder')
    parser.add_argument('--device', default='cpu',
                        help='device (default: %(default)s)')
    return parser.parse_args(argv)


def output_paths(image: str, paths: List[str], out: str) -> List[str]:
    """One output PNG per input image, refusing to overwrite any input.

    Args:
        image (str): The ``image`` argument (a file or a folder).
        paths (list[str]): The input images.
        out (str): Output folder.

    Returns:
        list[str]: ``out/<source name>.png`` for each input, in order.

    Raises:
        OverwriteInputError: If ``out`` is the image folder or an input,
            or an output would replace an input.
        NotADirectoryError: If ``out`` is an existing file.
    """
    from greenmim_mm.utils_io import (OverwriteInputError, refuse_same_file,
                                      same_file)
    folders = {osp.dirname(osp.abspath(p)) for p in paths}
    if osp.isdir(image):
        folders.add(image)
    for folder in sorted(folders):
        if same_file(folder, out):
            raise OverwriteInputError(
                f'--out {out!r} is the image folder {folder!r}; refusing to '
                'write into the inputs. Choose another output folder.')
    refuse_same_file(paths, out, what='--out folder')
    if osp.exists(out) and not osp.isdir(out):
        raise NotADirectoryError(f'--out {out!r} is a file; give a folder.')
    names = [osp.join(out, osp.basename(p) + '.png') for p in paths]
    if len(set(names)) != len(names):  # same base name from two folders
        raise OverwriteInputError(f'Output names clash in {out!r}: '
                                  f'{sorted(names)}.')
    for name in names:
        refuse_same_file(paths, name)
    return names


def main(argv=None):
    args = parse_args(argv)
    from greenmim_mm.models.utils import check_mask_ratio, unit_grid
    from greenmim_mm.visualization import (fixed_mask, list_images,
                                           load_images, load_model,
                                           panel_grid, reconstruct, save_png)
    if args.mask_ratio is not None:
        check_mask_ratio(args.mask_ratio)
    paths = list_images(args.image)[:args.max_images]
    outputs = output_paths(args.image, paths, args.out)
    model = load_model(args.config, args.checkpoint, args.device)
    ratio = model.mask_ratio if args.mask_ratio is None else \
        check_mask_ratio(args.mask_ratio)
    written = []
    for i, (path, dst) in enumerate(zip(paths, outputs)):
        inputs = load_images(model, [path])  # (1, 3, H, W)
        grid = unit_grid(inputs.shape[-2:], model.backbone.mask_unit)
        # one generator per image: image i gets the same mask on every run
        mask = fixed_mask(1, grid, ratio, args.seed + i)
        with torch.no_grad():
            panels = reconstruct(model, inputs, mask)
        written.append(save_png(panel_grid(panels), dst))
    print(f'wrote {len(written)} image(s) to {args.out}')
    return written


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
