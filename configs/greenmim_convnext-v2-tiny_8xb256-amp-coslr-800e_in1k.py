# GreenMIM ConvNeXt-V2-T, 224 px, mask ratio 0.6 (FCMAE), 8 GPUs x 256
# images, AMP, cosine lr, 800 epochs on ImageNet-1k (data/imagenet). Usage:
#   mim train mmpretrain configs/greenmim_convnext-v2-tiny_8xb256-amp-coslr-800e_in1k.py
_base_ = [
    '_base_/models/greenmim_convnext-v2-tiny.py',
    '_base_/datasets/imagenet_bs256_greenmim_224.py',
    '_base_/schedules/adamw_coslr-800e_bs2048.py',
    '_base_/default_runtime.py',
]
# FCMAE's optimiser: AdamW, lr 1.5e-4 * batch / 256, betas (0.9, 0.95),
# weight decay 0.05, 40 warm-up epochs then cosine (the schedule base);
# no decay on 1-D parameters (norms, biases, GRN) and the mask token, as
# FCMAE. `auto_scale_lr`
# rescales lr for other batch sizes (enable it with `--auto-scale-lr`).
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        flat_decay_mult=0.0,
        custom_keys={'mask_token': dict(decay_mult=0.)}))
