import json
import sys
import time

import numpy as np
import torch

from diffsci.protein.metrics import ca_contacts, psea_fractions
from diffsci.protein.sampling import load_model, sample_backbones

# usage: python protein/data/accept_check.py [CHECKPOINT [NUM_PER_LENGTH]]  (default: shipped checkpoint, 8)
LENGTHS = [60, 80, 100, 128]


def figures(designs) -> dict:
    """Issue 3's figures of a list of designs (CA-CA and clashes pooled over all pairs), plus
    mean P-SEA helix and strand and CA contacts at separation >= 6 per residue."""
    ca_ok, close, helix, strand, rg_ok, contacts = [], [], [], [], [], []
    for d in designs:
        ca = d.coords[0][:, 1]
        dd = np.linalg.norm(np.diff(ca, axis=0), axis=1)
        ca_ok.append((dd > 3.5) & (dd < 4.1))
        D = np.linalg.norm(ca[:, None] - ca[None], axis=-1)
        close.append(D[np.triu_indices(len(ca), k=2)] < 3.0)
        f = psea_fractions(ca)
        helix.append(f["helix"])
        strand.append(f["strand"])
        rg = np.sqrt(((ca - ca.mean(0)) ** 2).sum(1).mean())
        rg_ok.append(abs(rg / (2.2 * len(ca) ** 0.38) - 1) <= 0.3)
        contacts.append(ca_contacts(ca))
    return {"n": len(designs), "caca": float(np.concatenate(ca_ok).mean()), "clash": float(np.concatenate(close).mean()),
            "helix": float(np.mean(helix)), "strand": float(np.mean(strand)),
            "hs": float(np.mean(np.add(helix, strand))), "rgok": float(np.mean(rg_ok)),
            "contacts6": float(np.mean(contacts))}


if __name__ == "__main__":
    torch.set_num_threads(1)
    lm = load_model(sys.argv[1] if len(sys.argv) > 1 else None)
    num = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    t0 = time.time()
    f = figures(sample_backbones(lm, LENGTHS, num, seed=0, steps=100, progress=False))
    res = {"n": f["n"], "ca_ca_within_3.8+-0.3": f["caca"], "nonadjacent_ca_pairs_below_3A": f["clash"],
           "mean_helix_plus_strand_psea": f["hs"], "rg_within_30pct": f["rgok"],
           "seconds": round(time.time() - t0, 1), "checkpoint": lm.source}
    print(json.dumps(res, indent=1))
