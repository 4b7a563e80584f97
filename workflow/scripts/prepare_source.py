from cbdm.dataset import prepare_source
from cbdm.workflow import job

with job(snakemake):
    prepare_source(snakemake.params.spec, snakemake.output.npz, snakemake.output.json)
