# Demo: Swin-T (GreenMIM, ratio 0.75) on the built-in demo photos
# (tools/make_demo_data.py -> data/demo/train), 20 epochs, about 8 min on a
# 2-core CPU. Usage:
#   mim train mmpretrain configs/greenmim_swin-tiny-w7_1xb16-coslr-20e_demo.py
_base_ = [
    '_base_/models/greenmim_swin-base-w7.py',
    '_base_/datasets/imagenet_bs256_greenmim_224.py',
    '_base_/default_runtime.py',
]

model = dict(
    backbone=dict(arch='tiny'),
    neck=dict(in_channels=96 * 2**3, embed_dims=256, num_heads=8))

train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root='data/demo',
        data_prefix='train',
        with_label=False,
        pipeline={{_base_.train_pipeline}}))

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.95),
        weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=18, eta_min=1e-5, by_epoch=True,
         begin=2, end=20, convert_to_iter_based=True)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=20)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=5, max_keep_ckpts=2))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(base_batch_size=16)
# reconstruction grids of 4 fixed images every 100 iterations, in
# <work_dir>/vis/iter_XXXXXX.png
custom_hooks = [
    dict(type='ReconstructionVisHook', interval=100, num_images=4)
]
