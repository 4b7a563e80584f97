from cbdm.phenomenon import write_heldout_rates
from cbdm.workflow import job

with job(snakemake):
    p = snakemake.params
    write_heldout_rates(reference_npz=snakemake.input.reference, groups=p.groups, num_classes=p.num_classes,
                        cell=p.cell, out_json=snakemake.output.heldout)
