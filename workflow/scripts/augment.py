from cbdm.augment import run_augmentation
from cbdm.workflow import job

with job(snakemake):
    i = snakemake.input
    run_augmentation(**snakemake.params, train_npz=i.train, source_npz=i.source, samples_npz=list(i.samples),
                     out_json=snakemake.output.augmentation)
