"""Subprocess worker for the kill-and-resume test (tests/python/test_reliability_checkpoint.py).

Trains a tiny ConvNet-VAE on simulated data with checkpoints every epoch, then saves the model.

    python _train_worker.py --ckpt DIR --out DIR [--resume] [--marker FILE --slow-after N]

With ``--marker``/``--slow-after N``: after epoch N has finished (and its checkpoint is written)
the worker touches ``FILE`` and from then on sleeps a little in every forward pass, so the next
epoch lasts long enough for the parent to SIGKILL the process in the middle of it. Sleeping does
not change any number, so a slowed run gives the same weights as a fast one.

Not a test module (the leading underscore keeps pytest from collecting it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

import convnetvae as cv  # noqa: E402

SETTINGS = dict(max_epochs=6, batch_size=16, early_stopping=False, validation_size=0.1, seed=7,
                checkpoint_every=1, progress=False, n_threads=1)


def build_model() -> cv.ConvNetVAE:
    """The tiny model and data, identical in every process."""
    adata = cv.simulate(n_cells=120, n_bins=300, n_chromosomes=2, seed=11)
    cv.ConvNetVAE.setup_anndata(adata, modalities=list(adata.uns["modalities"]),
                                batch_key="batch")
    return cv.ConvNetVAE(adata, architecture="conv-k11s11", n_hidden=16, n_latent=4, seed=7)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--marker", default=None)
    p.add_argument("--slow-after", type=int, default=-1)
    args = p.parse_args()

    model = build_model()
    slow = {"on": False}
    fast_forward = model.module.forward

    def forward(*a, **k):
        if slow["on"]:
            time.sleep(0.25)
        return fast_forward(*a, **k)

    model.module.forward = forward  # instance attribute: nn.Module.__call__ uses it

    def callback(epoch: int, row: dict) -> None:
        if epoch == args.slow_after:
            slow["on"] = True
            if args.marker:
                Path(args.marker).write_text(str(epoch))

    model.train(**SETTINGS, checkpoint_dir=args.ckpt, resume=args.resume, callback=callback)
    del model.module.forward
    model.save(args.out, overwrite=True)


if __name__ == "__main__":
    main()
