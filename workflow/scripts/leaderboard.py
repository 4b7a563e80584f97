from cbdm.leaderboard import write_leaderboard
from cbdm.workflow import job

with job(snakemake):
    write_leaderboard(**snakemake.params, out_csv=snakemake.output.csv, out_md=snakemake.output.md)
