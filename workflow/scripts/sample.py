from cbdm.sample import sample
from cbdm.workflow import job

with job(snakemake):
    w = snakemake.wildcards
    sample(snakemake.params.settings, model_path=snakemake.input.model, guidance=float(w.guidance),
           sample_seed=int(w.sample_seed), device=snakemake.params.device,
           out_npz=snakemake.output.samples)
