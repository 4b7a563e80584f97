from cbdm.diagnose import diagnose
from cbdm.workflow import job

with job(snakemake):
    p, i = snakemake.params, snakemake.input
    diagnose(samples_npz=i.samples, train_npz=i.train, source_npz=i.source, groups=p.groups,
             num_classes=p.num_classes, classifier_cfg=p.classifier, memorization_cfg=p.memorization,
             device=p.device, cell=p.cell, out_json=snakemake.output.diagnostics)
