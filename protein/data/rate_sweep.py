"""Issue-3 figures and secondary structure of one checkpoint at several rotation rates.

usage: python protein/data/rate_sweep.py CHECKPOINT SEED NUM_PER_LENGTH RATE [RATE ...]
One JSON line per rate: lengths 60/80/100/128, 100 steps, time grid 0.999 u^2, one thread.
``caca`` is pooled over all consecutive pairs (as accept_check.py), ``contacts6`` is
``diffsci.protein.metrics.ca_contacts`` (CA pairs < 8 Å at sequence separation >= 6).
Used to choose the shipped checkpoint's inference_rate on a seed other than the benchmark's
(see CHECKPOINT.md).
"""
import json
import sys
import time

import numpy as np
import torch

from diffsci.protein.metrics import ca_contacts, psea_fractions
from diffsci.protein.sampling import load_model, sample_backbones

torch.set_num_threads(1)
ck, seed, num = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lm = load_model(ck)
for rate in map(float, sys.argv[4:]):
    t0 = time.time()
    ds = sample_backbones(lm, [60, 80, 100, 128], num, seed=seed, steps=100, progress=False, rotation_rate=rate)
    ok, close, h, s, rg, ct = [], [], [], [], [], []
    for d in ds:
        ca = d.coords[0][:, 1]
        dd = np.linalg.norm(np.diff(ca, axis=0), axis=1)
        ok.append((dd > 3.5) & (dd < 4.1))
        D = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
        close.append(D[np.triu_indices(len(ca), k=2)] < 3.0)
        f = psea_fractions(ca)
        h.append(f["helix"])
        s.append(f["strand"])
        rg.append(np.sqrt(((ca - ca.mean(0)) ** 2).sum(1).mean()) / (2.2 * len(ca) ** 0.38))
        ct.append(ca_contacts(ca))
    rg = np.array(rg)
    print(json.dumps({"checkpoint": ck, "rate": rate, "seed": seed, "n": len(ds),
                      "caca": round(float(np.concatenate(ok).mean()), 4),
                      "clash": round(float(np.concatenate(close).mean()), 5),
                      "helix": round(float(np.mean(h)), 3), "strand": round(float(np.mean(s)), 3),
                      "hs": round(float(np.mean(h) + np.mean(s)), 3),
                      "rgok": round(float((np.abs(rg - 1) <= 0.3).mean()), 3), "contacts6": round(float(np.mean(ct)), 2),
                      "seconds": round(time.time() - t0)}), flush=True)
