from cbdm.dataset import read_manifest, read_source_record
from cbdm.origins import training_origin
from cbdm.samplesets import import_samples
from cbdm.workflow import job

with job(snakemake):
    i = snakemake.input
    # the class counts of the long tail the cell's model learnt from, not of another one
    manifest = read_manifest(i.manifest, training_origin(snakemake.params.origin))
    record = read_source_record(i.source, snakemake.params.source_origin)
    import_samples(**snakemake.params, source=i.samples, class_counts=manifest["class_counts"],
                   image_shape=record["image_shape"], source_npz=i.pool, out_npz=snakemake.output.samples)
