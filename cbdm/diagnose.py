"""Stage 5 (diagnostics rule): the overlap and memorization diagnostics of one sample set, which
need its images rather than its features: the classification accuracy score (cbdm.cas) and the
memorization audit (cbdm.memorization), written as records (cbdm.records)."""
from __future__ import annotations

from .acceleration import resolve_device
from .cas import cas_records
from .dataset import read_image_set
from .io import write_json
from .memorization import memorization_records
from .records import is_class


def diagnose(*, samples_npz: str, train_npz: str, source_npz: str, groups: dict, num_classes: int,
             classifier_cfg: dict, memorization_cfg: dict, device: str, cell: dict, out_json: str,
             origin: dict | None = None, source_origin: dict | None = None,
             train_origin: dict | None = None) -> None:
    """CAS and the memorization audit of one sample set against the held-out and training images;
    with `origin` (its cell), a sample set made for another cell is refused, and with
    `source_origin` and `train_origin` (cbdm.dataset.data_origin) real images of other settings."""
    dev = resolve_device(device)
    heldout = read_image_set(source_npz, "heldout_", num_classes, origin=source_origin)
    generated = read_image_set(samples_npz, "", num_classes, heldout.images.shape[1:], origin)
    training = read_image_set(train_npz, "", num_classes, heldout.images.shape[1:], train_origin)
    records = cas_records(classifier_cfg, generated, heldout, groups, num_classes, dev)
    records += memorization_records(memorization_cfg, generated, training, heldout, num_classes, dev)
    write_json(out_json, {"cell": cell, "records": records})
    summary = {r["scope"]: round(r["value"], 3) for r in records if r["metric"] == "cas" and not is_class(r["scope"])}
    shares = [round(r["value"], 3) for r in records if r["metric"] == "near_copy_share" and r["value"] is not None]
    print(f"CAS {summary}; near-copy share per class {shares}", flush=True)
