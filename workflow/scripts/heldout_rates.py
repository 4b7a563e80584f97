from cbdm.phenomenon import write_heldout_rates
from cbdm.workflow import job

with job(snakemake):
    write_heldout_rates(**snakemake.params, reference_npz=snakemake.input.reference, out_json=snakemake.output.heldout)
