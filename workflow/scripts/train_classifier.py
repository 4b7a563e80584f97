from cbdm.classifier import train_classifier
from cbdm.workflow import job

with job(snakemake):
    p = snakemake.params
    train_classifier(p.features, source_npz=snakemake.input.npz, num_classes=p.num_classes,
                     device=p.device, out_model=snakemake.output.model,
                     out_report=snakemake.output.report)
