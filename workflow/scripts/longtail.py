from cbdm.dataset import build_longtail
from cbdm.workflow import job

with job(snakemake):
    build_longtail(**snakemake.params, source_npz=snakemake.input.npz, source_json=snakemake.input.json,
                   out_npz=snakemake.output.npz, out_manifest=snakemake.output.manifest)
