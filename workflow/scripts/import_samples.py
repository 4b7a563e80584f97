from cbdm.io import read_json
from cbdm.samplesets import import_samples
from cbdm.workflow import job

with job(snakemake):
    p, i = snakemake.params, snakemake.input
    labels, num_samples = snakemake.wildcards.labelset.rsplit("-", 1)
    import_samples(source=i.samples, fmt=p.fmt, resize=p.resize, labels=labels, num_samples=int(num_samples),
                   class_counts=read_json(i.manifest)["class_counts"],
                   image_shape=read_json(i.source)["image_shape"], class_names=p.class_names,
                   out_npz=snakemake.output.samples)
