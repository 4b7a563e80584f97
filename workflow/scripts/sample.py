from cbdm.io import read_json
from cbdm.sample import sample
from cbdm.workflow import job

with job(snakemake):
    w = snakemake.wildcards
    labels, num_samples = w.labelset.split("-")[:2]  # a protocol name may follow
    sample(snakemake.params.settings, model_path=snakemake.input.model, guidance=float(w.guidance),
           sample_seed=int(w.sample_seed), labels=labels, num_samples=int(num_samples),
           class_counts=read_json(snakemake.input.manifest)["class_counts"],
           device=snakemake.params.device, out_npz=snakemake.output.samples,
           identity=snakemake.params.identity)
