from cbdm.diagnose import diagnose
from cbdm.workflow import job

with job(snakemake):
    i = snakemake.input
    diagnose(**snakemake.params, samples_npz=i.samples, train_npz=i.train, source_npz=i.source,
             out_json=snakemake.output.diagnostics)
