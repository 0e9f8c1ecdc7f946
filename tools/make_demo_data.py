#!/usr/bin/env python
"""Build the built-in demo dataset from scikit-image's sample photographs.

Random crops (scale 0.15-1 of the photo, aspect 3/4-4/3), resized to
``--size`` and randomly flipped, are written as JPEGs into
``<out>/train/``: a small real-photo dataset for mmpretrain's
``CustomDataset`` that needs no download.

    python tools/make_demo_data.py --out data/demo --num 320
"""
import argparse
import os
import os.path as osp

import numpy as np

# colour photographs shipped inside the scikit-image wheel
PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'retina', 'cat',
          'immunohistochemistry', 'colorwheel', 'logo', 'motorcycle_left',
          'hubble_deep_field', 'camera', 'page', 'moon', 'grass', 'gravel',
          'brick')


def load_photos():
    from skimage import data
    photos = []
    for name in PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            img = loader()
        except Exception:  # pooch-fetched extras are not in the wheel
            continue
        if isinstance(img, tuple):
            img = img[0]
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        img = img[..., :3]
        if img.dtype != np.uint8:
            img = (255 * (img - img.min()) /
                   max(np.ptp(img), 1e-8)).astype(np.uint8)
        if min(img.shape[:2]) >= 128:
            photos.append((name, img))
    if not photos:
        raise RuntimeError('scikit-image ships no usable sample photos.')
    return photos


def random_crop(img, size, rng):
    from skimage.transform import resize
    h, w = img.shape[:2]
    for _ in range(10):
        area = h * w * rng.uniform(0.15, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch, cw = int(round(np.sqrt(area / ratio))), int(
            round(np.sqrt(area * ratio)))
        if 0 < ch <= h and 0 < cw <= w:
            break
    else:
        ch = cw = min(h, w)
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = resize(img[y:y + ch, x:x + cw], (size, size), anti_aliasing=True)
    crop = (crop * 255).clip(0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/demo')
    parser.add_argument('--num', type=int, default=320,
                        help='number of training images')
    parser.add_argument('--size', type=int, default=256,
                        help='side of the saved images in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    from skimage.io import imsave

    out_dir = osp.join(args.out, 'train')
    os.makedirs(out_dir, exist_ok=True)
    existing = [f for f in os.listdir(out_dir) if f.endswith('.jpg')]
    if len(existing) >= args.num:
        print(f'{out_dir}: {len(existing)} images already there')
        return out_dir
    photos = load_photos()
    rng = np.random.default_rng(args.seed)
    for i in range(args.num):
        name, img = photos[i % len(photos)]
        imsave(osp.join(out_dir, f'{name}_{i:04d}.jpg'),
               random_crop(img, args.size, rng), quality=92,
               check_contrast=False)
    print(f'wrote {args.num} images from {len(photos)} photos to {out_dir}')
    return out_dir


if __name__ == '__main__':
    main()
