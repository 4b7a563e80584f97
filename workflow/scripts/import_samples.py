from cbdm.io import read_json
from cbdm.samplesets import import_samples
from cbdm.workflow import job

with job(snakemake):
    i = snakemake.input
    import_samples(**snakemake.params, source=i.samples, class_counts=read_json(i.manifest)["class_counts"],
                   image_shape=read_json(i.source)["image_shape"], source_npz=i.pool,
                   out_npz=snakemake.output.samples)
