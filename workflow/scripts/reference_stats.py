from cbdm.refstats import write_reference_stats
from cbdm.workflow import job

with job(snakemake):
    write_reference_stats(**snakemake.params, reference_npz=snakemake.input.features, out_npz=snakemake.output.stats)
