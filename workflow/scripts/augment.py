from cbdm.augment import run_augmentation
from cbdm.workflow import job

with job(snakemake):
    p, i = snakemake.params, snakemake.input
    run_augmentation(augmentation=p.augmentation, row=snakemake.wildcards.row, train_npz=i.train,
                     source_npz=i.source, samples_npz=i.samples or None, groups=p.groups,
                     num_classes=p.num_classes, device=p.device, out_json=snakemake.output.augmentation)
