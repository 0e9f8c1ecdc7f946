# GreenMIM Swin-B, window 7, 224 px, mask ratio 0.75, 8 GPUs x 256 images,
# AMP, cosine lr, 800 epochs on ImageNet-1k (data/imagenet).
_base_ = [
    '_base_/models/greenmim_swin-base-w7.py',
    '_base_/datasets/imagenet_bs256_greenmim_224.py',
    '_base_/schedules/adamw_coslr-800e_bs2048.py',
    '_base_/default_runtime.py',
    '_base_/models/swin_paper-layout.py',
]

# the paper's LayerNorm eps 1e-6 (mmpretrain's Swin: 1e-5)
model = dict(backbone=_base_.paper_swin)
