from cbdm.io import read_json
from cbdm.sample import sample
from cbdm.workflow import job

with job(snakemake):
    sample(**snakemake.params, model_path=snakemake.input.model,
           class_counts=read_json(snakemake.input.manifest)["class_counts"], out_npz=snakemake.output.samples)
