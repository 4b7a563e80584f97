from cbdm.dataset import build_longtail
from cbdm.workflow import job

with job(snakemake):
    build_longtail(snakemake.params.longtail, float(snakemake.wildcards.imb), snakemake.input.npz,
                   snakemake.input.json, snakemake.output.npz, snakemake.output.manifest)
