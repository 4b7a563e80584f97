from cbdm.classifier import train_classifier
from cbdm.workflow import job

with job(snakemake):
    train_classifier(**snakemake.params, source_npz=snakemake.input.npz, out_model=snakemake.output.model,
                     out_report=snakemake.output.report)
