"""Where the fast sampling path's GPU time goes: torch.profiler over a few calls of the pipeline's
own sampler (cbdm.sample.generate on the paper config's fast path, the config's batch, a schedule
of --steps timesteps as in bench_sample.py), summarised as profile_train.py summarises a training
step: device time per kernel kind, the largest kernels, and each kernel under the operators that
launched them. bench_sample.py measured the fast path at 24.7 % MFU on an H100 at batch 2000
(2.85x the reference); this says where the rest of the time goes.

    python benchmarks/profile_sample.py                     # GPU: after the compile, 2 calls of 3 steps
    python benchmarks/profile_sample.py --size ci --device cpu --no-compile --batch 4 --steps 2 --calls 1
"""
from __future__ import annotations

import bench_sample
import profile_train
import torch

import harness


def main():
    p = profile_train.profile_arguments(__doc__, calls=2)
    p.add_argument("--steps", type=int, default=3, help="reverse steps per profiled call")
    args = p.parse_args()
    harness.pin_threads(args.threads)
    device = torch.device(args.device)
    config, fast, _ = harness.fast_and_reference(args, "sampling")
    model = harness.build_model(config, args.size, device).eval()
    call = bench_sample.sampling_call(config, fast, model, device, args.steps, {}, "fast")
    prof = profile_train.profile_steps(call, args.calls, device)
    profile_train.report(prof, device, f"sampling fast path, variant {args.variant}, batch "
                                       f"{fast['sampling']['batch_size']}, {args.calls} calls of {args.steps} steps "
                                       f"on {harness.machine(device)}", args.top, args.json)


if __name__ == "__main__":
    main()
