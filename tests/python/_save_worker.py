"""Subprocess worker for the kill-during-save tests (tests/python/test_reliability_save.py).

    python _save_worker.py PREFIX --steps N    # PREFIX1..PREFIXN: kill after file step k
    python _save_worker.py PREFIX --rounds N   # PREFIX1..PREFIXN: kill a save loop at random

The parent test has saved model A in every directory ``PREFIX<k>``. For each k the worker forks a
child (imports done once) that saves model B over ``PREFIX<k>`` and is SIGKILLed:

* ``--steps``: right after its k-th *file step*, one call of ``os.replace``, ``os.rename``,
  ``shutil.rmtree``, the atomic directory exchange or ``safetensors.torch.save_file``; whatever
  the implementation of ``save()``, killing after each step in turn visits every state it passes
  through;
* ``--rounds``: while saving B and A over the directory in a loop, after a random delay.

Model A (conv, seed 1) and model B (fc, seed 2) have different architectures, so weights of one
beside the config of the other cannot load. Prints one line ``k status`` per child.

Not a test module (the leading underscore keeps pytest from collecting it).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import time

import torch

torch.set_num_threads(1)

import convnetvae as cv  # noqa: E402


def models() -> tuple[cv.ConvNetVAE, cv.ConvNetVAE]:
    adata = cv.simulate(n_cells=40, n_bins=120, n_chromosomes=2, seed=5)
    cv.ConvNetVAE.setup_anndata(adata, modalities=list(adata.uns["modalities"]))
    a = cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=8, n_latent=3, seed=1)
    b = cv.ConvNetVAE(adata, architecture="fc-l1", n_hidden=8, n_latent=3, seed=2)
    return a, b


def _kill_after(k: int) -> None:
    """Wrap every file step so that the process kills itself right after the k-th one."""
    import safetensors.torch as st

    import convnetvae.io_utils as io_utils

    count = {"n": 0}

    def wrap(fn):
        def inner(*args, **kwargs):
            out = fn(*args, **kwargs)
            count["n"] += 1
            if count["n"] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return inner

    os.replace, os.rename, shutil.rmtree = wrap(os.replace), wrap(os.rename), wrap(shutil.rmtree)
    st.save_file = wrap(st.save_file)
    if hasattr(io_utils, "_exchange"):
        io_utils._exchange = wrap(io_utils._exchange)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("prefix")
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--rounds", type=int, default=0)
    args = p.parse_args()
    a, b = models()
    rng = random.Random(0)
    for k in range(1, max(args.steps, args.rounds) + 1):
        d = f"{args.prefix}{k}"
        pid = os.fork()
        if pid == 0:  # the child saves and is killed
            if args.steps:
                _kill_after(k)
                b.save(d, overwrite=True)
            else:
                while True:
                    for m in (b, a):
                        m.save(d, overwrite=True)
            os._exit(0)
        if args.rounds:
            time.sleep(rng.uniform(0.05, 0.5))
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        print(k, "killed" if os.WIFSIGNALED(status) else "finished", flush=True)


if __name__ == "__main__":
    main()
