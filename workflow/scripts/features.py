from cbdm.features import extract_features
from cbdm.workflow import job

with job(snakemake):
    i = snakemake.input
    extract_features(**snakemake.params, classifier_path=i.classifier, images_npz=i.images, source_json=i.source,
                     out_npz=snakemake.output.features)
