from cbdm.dataset import read_manifest
from cbdm.origins import training_origin
from cbdm.sample import sample
from cbdm.workflow import job

with job(snakemake):
    # the class counts of the long tail the cell's model learnt from, not of another one
    manifest = read_manifest(snakemake.input.manifest, training_origin(snakemake.params.origin))
    sample(**snakemake.params, model_path=snakemake.input.model, class_counts=manifest["class_counts"],
           out_npz=snakemake.output.samples)
