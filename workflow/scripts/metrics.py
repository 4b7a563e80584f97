from cbdm.evaluate import evaluate
from cbdm.workflow import job

with job(snakemake):
    p = snakemake.params
    evaluate(generated_npz=snakemake.input.generated, reference_npz=snakemake.input.reference,
             groups=p.groups, num_classes=p.num_classes, evaluation=p.evaluation, cell=p.cell,
             device=p.device,
             out_json=snakemake.output.metrics)
