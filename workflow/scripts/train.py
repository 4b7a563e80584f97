from cbdm.train import train
from cbdm.workflow import job

with job(snakemake):
    train(**snakemake.params, train_npz=snakemake.input.train, init_model=snakemake.input.get("init") or None,
          out_model=snakemake.output.model, out_log=snakemake.output.loss)
