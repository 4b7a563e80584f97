from cbdm.provenance import write_provenance
from cbdm.workflow import job

with job(snakemake):
    o = snakemake.output
    write_provenance(**snakemake.params, model_files=list(snakemake.input.models), out_json=o.provenance,
                     out_html=o.html, out_config=o.config)
