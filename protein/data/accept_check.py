import json, sys, time, numpy as np, torch
torch.set_num_threads(1)
from diffsci.protein.sampling import load_model, sample_backbones
from diffsci.protein.metrics import psea_fractions
# usage: python protein/data/accept_check.py [CHECKPOINT [NUM_PER_LENGTH]]  (default: shipped checkpoint, 8)
lm = load_model(sys.argv[1] if len(sys.argv) > 1 else None)
num = int(sys.argv[2]) if len(sys.argv) > 2 else 8
t0 = time.time()
ds = sample_backbones(lm, [60, 80, 100, 128], num, seed=0, steps=100, progress=False)
ca_ok, close, ss, rg_ok = [], [], [], []
for d in ds:
    ca = d.coords[0][:, 1]
    dd = np.linalg.norm(np.diff(ca, axis=0), axis=1)
    ca_ok.append(((dd > 3.5) & (dd < 4.1)))
    D = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
    iu = np.triu_indices(len(ca), k=2)
    close.append(D[iu] < 3.0)
    f = psea_fractions(ca)
    ss.append(f["helix"] + f["strand"])
    rg = np.sqrt(((ca - ca.mean(0)) ** 2).sum(1).mean())
    ref = 2.2 * len(ca) ** 0.38
    rg_ok.append(abs(rg / ref - 1) <= 0.3)
res = {"n": len(ds), "ca_ca_within_3.8+-0.3": float(np.concatenate(ca_ok).mean()),
       "nonadjacent_ca_pairs_below_3A": float(np.concatenate(close).mean()),
       "mean_helix_plus_strand_psea": float(np.mean(ss)), "rg_within_30pct": float(np.mean(rg_ok)),
       "seconds": round(time.time() - t0, 1), "checkpoint": lm.source}
print(json.dumps(res, indent=1))
