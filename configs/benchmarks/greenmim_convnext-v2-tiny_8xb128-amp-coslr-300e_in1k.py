# ImageNet-1k fine-tuning of a GreenMIM-pretrained ConvNeXt-V2-T (224 px):
# FCMAE's recipe for V2-T, 300 epochs, 8 GPUs x 128 images (batch 1024),
# AMP, AdamW lr 8e-4 with layer-wise lr decay 0.9, 40 warm-up epochs then
# cosine, drop path 0.2, EMA; the augmentation (RandAugment, Mixup/CutMix,
# RandomErasing, label smoothing 0.1) of the Swin-B sibling. Usage:
#   mim train mmpretrain configs/benchmarks/greenmim_convnext-v2-tiny_8xb128-amp-coslr-300e_in1k.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=<pretrain .pth>
_base_ = './greenmim_swin-base-w7_8xb256-amp-coslr-100e_in1k.py'

# what the pretraining config writes last
pretrained = ('work_dirs/greenmim_convnext-v2-tiny_8xb256-amp-coslr-800e_'
              'in1k/epoch_800.pth')

model = dict(
    backbone=dict(
        _delete_=True,
        # with no mask exactly mmpretrain's ConvNeXt (same keys, forward);
        # its init_weights also rejects a checkpoint of another arch
        type='GreenConvNeXt',
        arch='tiny',
        use_grn=True,
        layer_scale_init_value=0.,
        drop_path_rate=0.2,
        gap_before_final_norm=True,  # pooled, then the pretrained norm3
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=None,  # the backbone pools
    head=dict(in_channels=768))

train_dataloader = dict(batch_size=128)

# lr 8e-4 at batch 1024, layer decay 0.9 over ConvNeXt's 12 layer groups;
# no weight decay on 1-D parameters (norms, biases, GRN), as FCMAE
optim_wrapper = dict(
    optimizer=dict(lr=8e-4, weight_decay=0.05),
    paramwise_cfg=dict(
        _delete_=True, layer_decay_rate=0.9, flat_decay_mult=0.0))

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=40,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=260,
        eta_min=1e-6,
        by_epoch=True,
        begin=40,
        end=300,
        convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=300)
auto_scale_lr = dict(base_batch_size=1024)
custom_hooks = [dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL')]
