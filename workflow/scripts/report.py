from cbdm.report import ReportFiles, ReportSettings, build_report
from cbdm.workflow import job

with job(snakemake):
    p, i = snakemake.params, snakemake.input
    files = ReportFiles(metric_files=list(i.metrics), diagnostic_files=list(i.diagnostics),
                        sample_files=dict(zip(p.variants, i.samples)),
                        sample_origins=p.sample_origins, train_npz=i.train,
                        loss_logs=dict(zip(p.built_in, i.losses)), manifest_json=i.manifest,
                        augmentation_files=list(i.augmentation), heldout_json=i.heldout,
                        train_origin=p.train_origin)
    build_report(files, ReportSettings.from_params(p), dict(snakemake.output.items()))
