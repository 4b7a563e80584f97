from cbdm.refstats import write_reference_stats
from cbdm.workflow import job

with job(snakemake):
    p = snakemake.params
    write_reference_stats(reference_npz=snakemake.input.features, groups=p.groups, num_classes=p.num_classes,
                          extractor=p.extractor, reference=snakemake.wildcards.reference,
                          out_npz=snakemake.output.stats)
