"""Classification Accuracy Score (Ravuri & Vinyals 2019): train a classifier on generated
samples only and test it on held-out real images. A class whose samples do not look like the
class (or look like another class: the overlap) gets a low score."""
from __future__ import annotations

import numpy as np

from .classifier import fit_classifier, per_class_accuracy
from .records import Record, class_scope, record
from .sources import ImageSet


def cas_records(classifier_cfg: dict, generated: ImageSet, test: ImageSet, groups: dict,
                num_classes: int, device) -> list[Record]:
    """CAS per class and, as the mean of per-class accuracies, for all classes and each group."""
    model = fit_classifier(generated, num_classes, classifier_cfg, device, "CAS classifier")
    per_class = per_class_accuracy(model, test, num_classes, device)
    n_gen = np.bincount(generated.labels, minlength=num_classes)
    n_test = np.bincount(test.labels, minlength=num_classes)
    records = [record(class_scope(c), "cas", per_class[c], n_gen[c], n_test[c]) for c in range(num_classes)]
    for name, classes in [("all", list(range(num_classes)))] + list(groups.items()):
        # Every class counts the same, however many test images it has.
        values = [per_class[c] for c in classes if per_class[c] is not None]
        records.append(record(name, "cas", np.mean(values) if values else None, n_gen[classes].sum(),
                              n_test[classes].sum(), "" if values else "no held-out images"))
    return records
