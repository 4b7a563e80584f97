from cbdm.report import build_report
from cbdm.workflow import job

with job(snakemake):
    p, i = snakemake.params, snakemake.input
    build_report(metric_files=list(i.metrics), diagnostic_files=list(i.diagnostics),
                 expected_cells=p.expected_cells, variants=p.variants,
                 sample_files=dict(zip(p.variants, i.samples)), train_npz=i.train,
                 loss_logs=dict(zip(p.built_in, i.losses)), manifest_json=i.manifest, groups=p.groups,
                 overlap=p.overlap, evaluation=p.evaluation, declared_guidance=p.declared_guidance,
                 sampling=p.sampling, features=p.features, published=p.published,
                 title=p.title, outputs=dict(snakemake.output.items()), protocol_guidance=p.protocol_guidance,
                 augmentation_files=list(i.augmentation))
