from cbdm.train import train
from cbdm.workflow import job

with job(snakemake):
    p = snakemake.params
    train(p.settings, network=p.network, diffusion=p.diffusion, train_npz=snakemake.input.train,
          num_classes=p.num_classes, seed=int(snakemake.wildcards.seed), device=p.device,
          out_model=snakemake.output.model, out_log=snakemake.output.loss,
          checkpoint_path=p.checkpoint, init_model=snakemake.input.get("init") or None,
          identity=p.identity)
