"""A synthetic report's inputs: metrics and diagnostics files of two variants over three training
seeds and two protocols, shared by the report tests (tests/test_report.py, test_report_html.py)."""
import numpy as np

from cbdm.fingerprint import origin_array
from cbdm.io import write_json, write_npz
from cbdm.records import record
from cbdm.report import ReportFiles, ReportSettings

GROUPS = {"head": [0], "tail": [1]}
EVALUATION = {"protocols": {"ours": {"labels": "exact", "num_samples": 20, "reference": "heldout"},
                            "paper": {"labels": "uniform_random", "num_samples": 20, "reference": "balanced_train"}},
              "report_protocol": None, "guidance_choice": "best", "baseline": None, "matched_repeats": 3,
              "matched_fraction": 0.5, "pr_neighborhood": 5,
              "memorization": {"relative_threshold": 0.5}}
FID = {("ddpm", 1.0): [10.0, 12.0, 11.0], ("ddpm", 2.0): [20.0, 21.0, 22.0],
       ("cbdm", 1.0): [8.0, 10.0, 9.0]}


PUBLISHED = [
    {"source": "x", "imbalance_factor": 10, "method": "DDPM", "variant": "ddpm", "metric": "fid", "value": 10.5,
     "status": "to verify", "samples": 50000, "reference_statistics": "train", "inception_preprocessing": "pytorch_fid",
     "protocol": "ancestral", "reference": "paper A"},
    {"source": "x", "imbalance_factor": 10, "method": "T2H", "variant": None, "metric": "fid", "value": 7.0,
     "status": "to verify", "samples": 50000, "reference_statistics": "train", "inception_preprocessing": "not stated",
     "protocol": "", "reference": "paper B"},
    {"source": "x", "imbalance_factor": 10, "method": "DiffROP", "variant": "overlap", "metric": "fid",
     "value": None, "status": "not available", "samples": None, "reference_statistics": None,
     "inception_preprocessing": "not stated", "protocol": "?", "reference": "paper C"},
]


def sample_origin(variant: str) -> dict:
    """What the sample set shown for `variant` records (cbdm.origins.sample_origin's keys)."""
    return {"dataset": "x", "imbalance_factor": "10", "variant": variant, "seed": 0, "guidance": "1",
            "sample_seed": 0, "labelset": "exact-20", "training_digest": "t", "data_digest": "d", "sampling": "s"}


def metrics_records(fid):
    out = []
    for scope, n in (("all", 20), ("head", 10), ("tail", 10), ("class 0", 10), ("class 1", 10)):
        out += [record(scope, "fid", fid, n, n), record(scope, "kid_mean", 0.001, n, n),
                record(scope, "precision", 0.6, n, n), record(scope, "recall", 0.5, n, n),
                record(scope, "accuracy", 0.9, n, 0), record(scope, "label_entropy", 0.3, n, 0),
                record(scope, "misclassified_into:head", 0.05, n, 0)]
    out += [record(g, "fid@matched", fid + 1, 10, 10, "3 random subsets", sd=0.5, ci=(fid, fid + 2))
            for g in GROUPS]
    return out


def diagnostics_records():
    out = [record(s, "cas", 0.8, 10, 10) for s in ("all", "head", "tail")]
    for c in (0, 1):
        out += [record(f"class {c}", "near_copy_share", 0.1 * c, 10, 5),
                record(f"class {c}", "near_copy_threshold", 0.5, 10, 5),
                record(f"class {c}", "near_copy_share_heldout", 0.0, 10, 5)]
    return out


def synthetic_report_inputs(tmp_path):
    """A complete synthetic report's inputs (3 training seeds, 2 variants, 2 protocols) under `tmp_path`."""
    metric_files, diagnostic_files, cells = [], [], []
    for (variant, guidance), values in FID.items():
        for seed, fid in enumerate(values):
            for protocol in EVALUATION["protocols"]:
                cell = dict(variant=variant, seed=seed, guidance=guidance, sample_seed=0, protocol=protocol)
                cells.append(cell)
                path = tmp_path / f"m-{variant}-{guidance}-{seed}-{protocol}.json"
                write_json(path, {"cell": cell, "records": metrics_records(fid + (protocol == "paper")),
                                  "confusion": [[9, 1], [1, 9]]})
                metric_files.append(str(path))
            path = tmp_path / f"d-{variant}-{guidance}-{seed}.json"
            write_json(path, {"cell": {**cell, "protocol": "ours"}, "records": diagnostics_records()})
            diagnostic_files.append(str(path))
    write_json(tmp_path / "manifest.json", {"total": 30, "class_counts": [20, 10]})
    for variant in ("ddpm", "cbdm"):
        write_npz(tmp_path / f"s-{variant}.npz", images=np.zeros((20, 1, 8, 8), np.uint8),
                  labels=np.repeat([0, 1], 10), **origin_array(sample_origin(variant)))
    (tmp_path / "loss.csv").write_text("step,lr,loss,eps_mse\n1,0.1,1.0,1.0\n2,0.1,0.5,0.5\n")
    write_npz(tmp_path / "train.npz", images=np.full((30, 1, 8, 8), 7, np.uint8), labels=np.repeat([0, 1], [20, 10]))
    outputs = {k: str(tmp_path / f"out.{k}") for k in
               ("csv", "runs", "stats", "paper", "augmentation", "md", "tex", "html", "protocol", "page_main",
                "page_per_class", "page_diagnostics", "page_comparisons", "page_data", "fid_vs_count",
                "precision_recall", "groups", "guidance", "confusion", "samples", "memorization", "loss")}
    files = ReportFiles(metric_files=metric_files, diagnostic_files=diagnostic_files,
                        sample_files={v: str(tmp_path / f"s-{v}.npz") for v in ("ddpm", "cbdm")},
                        sample_origins={v: sample_origin(v) for v in ("ddpm", "cbdm")},
                        train_npz=str(tmp_path / "train.npz"), loss_logs={"ddpm": str(tmp_path / "loss.csv")},
                        manifest_json=str(tmp_path / "manifest.json"), heldout_json=str(tmp_path / "heldout.json"))
    write_json(tmp_path / "heldout.json", {"cell": {"reference": "heldout"}, "records": [
        record("tail", "misclassified_into:head", 0.01, 10, 0), record("head", "misclassified_into:tail", 0.0, 10, 0)]})
    settings = ReportSettings(title="synthetic", variants=["ddpm", "cbdm"], groups=GROUPS,
                              overlap={"source": "tail", "target": "head"}, evaluation=EVALUATION, protocol="ours",
                              baseline="ddpm",
                              protocol_guidance={p: {"ddpm": 2.0, "cbdm": 1.0} for p in ("ours", "paper")},
                              sampling={v: {"sampler": "ddim", "steps": 10} for v in ("ddpm", "cbdm")},
                              features={"extractor": "classifier"}, published=PUBLISHED, expected_cells=cells)
    return dict(files=files, settings=settings, outputs=outputs)
