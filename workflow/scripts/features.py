from cbdm.features import extract_features
from cbdm.workflow import job

with job(snakemake):
    p = snakemake.params
    extract_features(features_cfg=p.features, classifier_path=snakemake.input.classifier,
                     images_npz=snakemake.input.images, prefix=p.prefix, device=p.device,
                     out_npz=snakemake.output.features, source_json=snakemake.input.source)
