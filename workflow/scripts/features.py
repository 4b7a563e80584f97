from cbdm.features import extract_features
from cbdm.workflow import job

with job(snakemake):
    extract_features(extractor_path=snakemake.input.extractor, images_npz=snakemake.input.images,
                     prefix=snakemake.params.prefix, device=snakemake.params.device,
                     out_npz=snakemake.output.features)
