from cbdm.provenance import write_provenance
from cbdm.workflow import job

with job(snakemake):
    write_provenance(config=snakemake.params.config, seeds=snakemake.params.seeds, code_dir=snakemake.params.code_dir,
                     model_files=list(snakemake.input.models), out_json=snakemake.output.provenance,
                     out_html=snakemake.output.html,
                     out_config=snakemake.output.config)
