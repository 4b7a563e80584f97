"""Features + FID: the pipeline's own path (cbdm.features.inception_features, cbdm.metrics.
frechet_distance) against clean-fid's, on the same images and the same Inception network.

Reference: clean-fid's pipeline (PNG files read by a DataLoader, PIL "clean" bicubic resize to
299x299 on the CPU, Inception in batches of 128, FID in numpy/scipy). Where clean-fid is
not installed or cannot run (the GPU machine), a stand-in of that pipeline with the same steps (PNG
files, PIL bicubic resize, batches of 128, numpy covariance and scipy's sqrtm), and the table says so.
Ours: the uint8 array in memory, Inception resizing on the device, large batches, FID in float64
torch on the device. Both use torch-fidelity's Inception-v3; without --inception-weights, random
weights in the same file format (same cost; FID values then not meaningful, and it says so).

    python benchmarks/bench_features.py --inception-weights data/assets/weights-inception-2015-12-05-6726825d.pth
    python benchmarks/bench_features.py --device cpu --images 16 --batch 8 --workers 0 --blocks 1
"""
from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cbdm.features import inception_features, save_random_inception_weights
from cbdm.metrics import frechet_distance

import harness


class PngFolder(torch.utils.data.Dataset):
    """clean-fid's reading of a folder: each PNG through PIL, bicubic resize to 299 on the CPU."""

    def __init__(self, folder: Path):
        self.files = sorted(folder.glob("*.png"))

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        image = Image.open(self.files[i]).convert("RGB").resize((299, 299), Image.BICUBIC)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def cleanfid_like(folders, extractor, device, batch: int, workers: int) -> float:
    """The stand-in for clean-fid's folder pipeline (see the module docstring)."""
    from scipy import linalg

    stats = []
    for folder in folders:
        loader = torch.utils.data.DataLoader(PngFolder(folder), batch_size=batch, num_workers=workers)
        feats = np.concatenate([extractor(x.to(device))[0].double().cpu().numpy() for x in loader])
        stats.append((feats.mean(axis=0), np.cov(feats, rowvar=False)))
    (mu1, s1), (mu2, s2) = stats
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def cleanfid_cannot_run() -> str | None:
    """Why clean-fid is unusable here, or None: missing, or its FID calls scipy.linalg.sqrtm with
    `disp`, which scipy 1.18 no longer takes (the GPU image of 2026-11-27 has scipy 1.18.1)."""
    if importlib.util.find_spec("cleanfid") is None:
        return "clean-fid NOT installed"
    import inspect

    import scipy
    from scipy import linalg

    if "disp" not in inspect.signature(linalg.sqrtm).parameters:
        return (f"clean-fid's FID calls scipy.linalg.sqrtm(disp=False), which scipy {scipy.__version__} no longer "
                f"takes: carry scipy<1.18 in .whl")
    return None


def reference_path(folders, extractor, device, args):
    """(name, detail, callable) of clean-fid's pipeline, or of its stand-in where clean-fid is
    missing or cannot run (the detail says which)."""
    why = "asked for" if args.stand_in else cleanfid_cannot_run()
    if why is None:
        from cleanfid import fid as cleanfid

        def model(batch):  # clean-fid hands over float images in [0, 255] at 299x299
            return extractor(batch.round().clamp(0, 255).to(torch.uint8))[0]

        def run():
            feats = [cleanfid.get_folder_features(str(f), model=model, num_workers=args.workers,
                                                  batch_size=args.reference_batch, device=device, mode="clean",
                                                  verbose=False) for f in folders]
            stats = [(f.mean(axis=0), np.cov(f, rowvar=False)) for f in feats]
            return float(cleanfid.frechet_distance(*stats[0], *stats[1]))
        return "clean-fid", "clean-fid: PNG files, PIL resize, numpy FID", run
    return ("cf-like", f"stand-in of clean-fid's pipeline ({why}): PNG files, PIL bicubic, numpy/scipy FID",
            lambda: cleanfid_like(folders, extractor, device, args.reference_batch, args.workers))


def run(args) -> dict:
    """Run this benchmark with the parsed `args`; returns the figures it printed."""
    harness.pin_threads(args.threads)
    device = torch.device(args.device)
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    rng = np.random.RandomState(0)
    sets = [rng.randint(0, 256, size=(args.images, 3, 32, 32), dtype=np.uint8) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.inception_weights or Path(tmp) / "random-inception.pth"
        if args.inception_weights is None:
            save_random_inception_weights(weights)
        extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                feature_extractor_weights_path=str(weights)).to(device).eval()
        folders = []
        for i, images in enumerate(sets):
            folders.append(Path(tmp) / f"set{i}")
            folders[-1].mkdir()
            for j, image in enumerate(images):
                Image.fromarray(image.transpose(1, 2, 0)).save(folders[-1] / f"{j:06d}.png")
        fids = {}
        name, detail, reference = reference_path(folders, extractor, device, args)

        def ours():
            feats = [inception_features(images, weights, device, batch_size=args.batch)[0] for images in sets]
            fids["ours"] = frechet_distance(feats[0], feats[1], device)

        def theirs():
            fids[name] = reference()

        with torch.no_grad():
            flops = harness.count_flops(lambda: extractor(torch.from_numpy(sets[0][:1]).to(device)))
            harness.reset_peak_memory(device)
            timings = harness.alternate({name: theirs, "ours": ours}, device, args.blocks, 1, args.budget)
    rows = [harness.path_row(name, timings[name], 2 * args.images, 2 * args.images * flops, device, detail),
            harness.path_row("ours", timings["ours"], 2 * args.images, 2 * args.images * flops, device,
                             f"cbdm.features + cbdm.metrics: uint8 arrays, resize on the device, batch {args.batch}")]
    weights_note = "real Inception weights" if args.inception_weights else "RANDOM weights: FID values not meaningful"
    extra = {f"FID {name} vs ours": f"{fids[name]:.4f} vs {fids['ours']:.4f} (the resize differs: bicubic PIL "
                                    f"vs bilinear TF)",
             "GFLOP per image (Inception at 299x299)": round(flops / 1e9, 2)}
    return harness.print_table(f"Features + FID of 2 x {args.images} 32x32 images ({weights_note})", rows, "images/s",
                               device, args, extra)


def parser():
    """The command line of this benchmark."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=10000, help="images per set (two sets are compared)")
    p.add_argument("--batch", type=int, default=500, help="our batch size")
    p.add_argument("--reference-batch", type=int, default=128, help="clean-fid's default batch size")
    p.add_argument("--workers", type=int, default=8, help="the reference DataLoader's workers")
    p.add_argument("--blocks", type=int, default=3, help="timed runs of each path, alternating")
    p.add_argument("--budget", type=float, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--stand-in", action="store_true", help="time clean-fid's stand-in even where clean-fid exists")
    p.add_argument("--inception-weights")
    p.add_argument("--json")
    return p


if __name__ == "__main__":
    run(parser().parse_args())
