"""Feature extraction + FID: clean-fid's pipeline against ours, on the same images and the same
Inception network.

clean-fid: PNG files read by a DataLoader, PIL "clean" resize to 299x299 on the CPU, Inception
in batches, FID in numpy/scipy. Ours: the uint8 array in memory, Inception (torch-fidelity's
port, resizing on the device) in large batches, FID in float64 torch on the device. Both use
torch-fidelity's Inception-v3: clean-fid's own copy downloads at run time, which this suite does
not do. Without --inception-weights, random weights in the same file format stand in (the
throughput is the same; the FID values are not meaningful then, and the script says so).

    python benchmarks/bench_features.py --inception-weights data/assets/weights-inception-2015-12-05-6726825d.pth
    python benchmarks/bench_features.py --device cpu --images 16 --batch 8 --workers 0
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cbdm.features import inception_features, save_random_inception_weights
from cbdm.metrics import frechet_distance

import harness


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=10000, help="images per set (two sets are compared)")
    parser.add_argument("--batch", type=int, default=500, help="our batch size")
    parser.add_argument("--cleanfid-batch", type=int, default=128, help="clean-fid's default batch size")
    parser.add_argument("--workers", type=int, default=8, help="clean-fid's DataLoader workers")
    parser.add_argument("--inception-weights")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = torch.device(args.device)
    from cleanfid import fid as cleanfid

    rng = np.random.RandomState(0)
    sets = [rng.randint(0, 256, size=(args.images, 3, 32, 32), dtype=np.uint8) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.inception_weights
        if weights is None:
            weights = Path(tmp) / "random-inception.pth"
            save_random_inception_weights(weights)
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                feature_extractor_weights_path=str(weights)).to(device)

        def cleanfid_model(batch):  # clean-fid hands over float images in [0, 255] at 299x299
            return extractor(batch.round().clamp(0, 255).to(torch.uint8))[0]

        folders = []
        for i, images in enumerate(sets):
            folder = Path(tmp) / f"set{i}"
            folder.mkdir()
            for j, image in enumerate(images):
                Image.fromarray(image.transpose(1, 2, 0)).save(folder / f"{j:06d}.png")
            folders.append(folder)

        rows, fids = [], {}
        harness.reset_peak_memory(device)
        started = time.perf_counter()
        feats = [cleanfid.get_folder_features(str(f), model=cleanfid_model, num_workers=args.workers,
                                              batch_size=args.cleanfid_batch, device=device, mode="clean",
                                              verbose=False) for f in folders]
        stats = [(f.mean(axis=0), np.cov(f, rowvar=False)) for f in feats]
        fids["clean-fid"] = float(cleanfid.frechet_distance(*stats[0], *stats[1]))
        seconds = time.perf_counter() - started
        rows.append(harness.result_row("clean-fid", 2 * args.images / seconds, device,
                                       f"PNG files, PIL resize, batch {args.cleanfid_batch}, "
                                       f"{args.workers} workers, numpy FID"))

        harness.reset_peak_memory(device)
        harness.synchronize(device)
        started = time.perf_counter()
        ours = [inception_features(images, weights, device, batch_size=args.batch)[0] for images in sets]
        fids["ours"] = frechet_distance(ours[0], ours[1], device)
        harness.synchronize(device)
        seconds = time.perf_counter() - started
        rows.append(harness.result_row("ours", 2 * args.images / seconds, device,
                                       f"uint8 arrays, resize on the device, batch {args.batch}, "
                                       f"torch FID on the device"))
    weights_note = "real Inception weights" if args.inception_weights else "RANDOM weights: FID values not meaningful"
    harness.print_comparison(f"Features + FID of 2 x {args.images} 32x32 images ({weights_note})", rows,
                     "images/s", args, {"FID clean-fid vs ours": f"{fids['clean-fid']:.4f} vs {fids['ours']:.4f} "
                                                                  f"(the resize differs: bicubic PIL vs bilinear TF)"})


if __name__ == "__main__":
    main()
