"""Issue-3 figures and secondary structure of one checkpoint at several rotation rates.

usage: python protein/data/rate_sweep.py CHECKPOINT SEED NUM_PER_LENGTH RATE [RATE ...]
One JSON line per rate: lengths 60/80/100/128, 100 steps, time grid 0.999 u^2, one thread;
the figures are accept_check.py's (``caca`` pooled over all consecutive pairs, ``contacts6`` =
CA pairs < 8 Å at sequence separation >= 6 per residue). Used to choose the shipped
checkpoint's inference_rate on a seed other than the benchmark's (see CHECKPOINT.md).
"""
import json
import sys
import time

import torch
from accept_check import LENGTHS, figures  # the script's own folder is on sys.path

from diffsci.protein.sampling import load_model, sample_backbones

torch.set_num_threads(1)
ck, seed, num = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lm = load_model(ck)
for rate in map(float, sys.argv[4:]):
    t0 = time.time()
    f = figures(sample_backbones(lm, LENGTHS, num, seed=seed, steps=100, progress=False, rotation_rate=rate))
    print(json.dumps({"checkpoint": ck, "rate": rate, "seed": seed,
                      **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in f.items()},
                      "seconds": round(time.time() - t0)}), flush=True)
