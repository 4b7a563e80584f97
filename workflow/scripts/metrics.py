from cbdm.evaluate import evaluate
from cbdm.workflow import job

with job(snakemake):
    evaluate(**snakemake.params, generated_npz=snakemake.input.generated, reference_npz=snakemake.input.reference,
             out_json=snakemake.output.metrics)
