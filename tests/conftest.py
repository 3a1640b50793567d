"""Shared test settings.

Tests use tiny tensors, for which torch's intra-op thread pool costs more than it gives (and
on a busy 2-core machine, thread oversubscription makes small ops ~50x slower): one thread.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
