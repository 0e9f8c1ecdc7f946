# Demo: a small Swin (GreenMIM, ratio 0.75) on the built-in demo photos
# (tools/make_demo_data.py -> data/demo/train), CPU friendly, 5 epochs.
_base_ = [
    '_base_/models/greenmim_swin-base-w7.py',
    '_base_/datasets/imagenet_bs256_greenmim_224.py',
    '_base_/default_runtime.py',
]

model = dict(
    backbone=dict(
        arch=dict(embed_dims=48, depths=[2, 2, 2, 2],
                  num_heads=[2, 4, 8, 16])),
    neck=dict(in_channels=48 * 2**3, embed_dims=128, num_heads=4))

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
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=4, by_epoch=True, begin=1, end=5,
         convert_to_iter_based=True)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=5)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
auto_scale_lr = dict(base_batch_size=16)
