from cbdm.report import build_report
from cbdm.workflow import job

with job(snakemake):
    p, i = snakemake.params, snakemake.input
    build_report(metric_files=list(i.metrics),
                 sample_files=dict(zip(p.variants, i.samples)),
                 loss_logs=dict(zip(p.built_in, i.losses)),
                 manifest_json=i.manifest, groups=p.groups, overlap=p.overlap, evaluation=p.evaluation, title=p.title,
                 outputs=dict(snakemake.output.items()))
