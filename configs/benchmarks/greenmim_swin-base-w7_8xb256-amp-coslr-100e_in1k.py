# ImageNet-1k fine-tuning of a GreenMIM-pretrained Swin-B (window 7, 224 px):
# 100 epochs, 8 GPUs x 256 images, AMP, AdamW with layer-wise lr decay 0.9,
# 20 warm-up epochs then cosine; RandAugment, Mixup/CutMix, RandomErasing,
# label smoothing 0.1; drop path 0.1 (mmpretrain's SimMIM Swin-B recipe).
# Usage:
#   mim train mmpretrain configs/benchmarks/greenmim_swin-base-w7_8xb256-amp-coslr-100e_in1k.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=<pretrain .pth>
# Self-contained (no `mmpretrain::` _base_, whose `_scope_` breaks
# `collate_fn`: see README "Known pitfalls").
_base_ = [
    '../_base_/default_runtime.py', '../_base_/models/swin_paper-layout.py'
]

# what `mim train mmpretrain configs/greenmim_swin.py` writes last
pretrained = 'work_dirs/greenmim_swin/epoch_800.pth'

# model settings
model = dict(
    type='ImageClassifier',
    backbone=dict(
        # with no mask, exactly mmpretrain's SwinTransformer (same keys and
        # forward); its init_weights also rejects a checkpoint of the wrong
        # architecture.
        type='GreenSwinTransformer',
        arch='base',
        img_size=224,
        window_size=7,
        drop_path_rate=0.1,
        # LayerNorm eps 1e-6 as in the paper's encoders and our pretraining
        # configs (mmpretrain's Swin: 1e-5), so that a converted official
        # checkpoint (tools/convert_official.py) runs exactly as it was
        # trained
        **_base_.paper_swin,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1024,
        init_cfg=None,  # the classifier-level init_cfg below applies
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ],
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

# dataset settings
dataset_type = 'ImageNet'
data_root = 'data/imagenet/'
data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
bgr_mean = data_preprocessor['mean'][::-1]
bgr_std = data_preprocessor['std'][::-1]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='RandomResizedCrop',
        scale=224,
        backend='pillow',
        interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(
            pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=256,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs')
]

train_dataloader = dict(
    batch_size=256,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    num_workers=5,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

# optimizer: lr 5e-3 at batch 2048 (1.25e-3 * 2048 / 512), layer decay 0.9
# over the 24 blocks + stem + head of Swin-B, no decay on norms, biases and
# position tables.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1.25e-3 * 2048 / 512, betas=(0.9, 0.999),
        weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    constructor='LearningRateDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.9,
        custom_keys={
            '.norm': dict(decay_mult=0.0),
            '.bias': dict(decay_mult=0.0),
            '.absolute_pos_embed': dict(decay_mult=0.0),
            '.relative_position_bias_table': dict(decay_mult=0.0)
        }))

# 20 warm-up epochs, then cosine to 100 epochs
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=2.5e-7 / 1.25e-3,
        by_epoch=True,
        begin=0,
        end=20,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=80,
        eta_min=2.5e-7 * 2048 / 512,
        by_epoch=True,
        begin=20,
        end=100,
        convert_to_iter_based=True)
]

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=100, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=2048)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3))
