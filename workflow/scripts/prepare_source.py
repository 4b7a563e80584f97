from cbdm.dataset import prepare_source
from cbdm.workflow import job

with job(snakemake):
    prepare_source(**snakemake.params, out_npz=snakemake.output.npz, out_json=snakemake.output.json)
