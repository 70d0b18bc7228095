"""The saved-model format, owned here alone: a directory with ``config.json`` and
``model.safetensors``, neither of which can execute code when loaded.

``config.json`` (versioned by ``format``) holds ``package``, ``module`` (the
:class:`~convnetvae.model.vae.ModuleConfig`), ``registry`` (what ``setup_anndata`` recorded),
``bins`` (chrom/start/end/names), ``seed``, ``is_trained``, ``train_config`` and ``history``.
Faces may keep their own notes beside it as *sidecar* files (``r_bridge.json``: what the R
package was called with). :meth:`ConvNetVAE.save <convnetvae.api.ConvNetVAE.save>` /
``load`` and the R bridge read and write models only through :func:`write`, :func:`read` and the
sidecar functions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ConvNetVAEError
from .io_utils import OLD_TAG, atomic_directory, check_writable, stale_siblings, write_json

MODEL_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class SavedModel:
    """A saved model directory whose ``config.json`` has been read and checked."""

    path: Path
    config: dict

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def registry(self) -> dict:
        return dict(self.config["registry"])

    def bins(self) -> pd.DataFrame:
        """The model's bins (chrom, start, end; index = names)."""
        b = self.config["bins"]
        return pd.DataFrame({"chrom": b["chrom"], "start": b["start"], "end": b["end"]},
                            index=b.get("names"))

    def module_config(self) -> Any:
        """The :class:`~convnetvae.model.vae.ModuleConfig` to rebuild the module."""
        from .model.vae import module_config_from_dict

        try:
            return module_config_from_dict(self.config["module"])
        except ConvNetVAEError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            what = f"missing {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
            raise ConvNetVAEError(f"{self.config_path} is incomplete or invalid ({what})") from None

    def load_state(self) -> dict:
        """The weights (tensors by name)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        w_path = self.path / WEIGHTS_FILE
        try:
            return load_file(str(w_path))
        except (SafetensorError, OSError) as err:
            raise ConvNetVAEError(f"{w_path} is corrupted or truncated: {err}") from None

    def sidecar(self, name: str) -> dict:
        """A face's notes saved beside the model (``{}`` when there are none)."""
        return read_sidecar(self.path, name)


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a saved model's config (it may still be damaged)."""
    return (Path(path) / CONFIG_FILE).exists()


def write(path: str | os.PathLike, config: dict, state: dict, overwrite: bool = False,
          sidecars: dict[str, dict] | None = None) -> Path:
    """Write a model directory atomically: all files go to a sibling temporary directory,
    which then replaces ``path`` in one step.

    After a crash or kill at any point ``path`` holds the complete previous model (or nothing, if
    there was none) or the complete new one; a failed write (a full disk, a read-only file
    system) leaves ``path`` untouched and no temporary files.

    Parameters
    ----------
    config
        Everything but ``format`` and ``package``, which are added here.
    state
        The module's tensors (moved to CPU, contiguous).
    overwrite
        Replace an existing model at ``path`` (never a directory holding something else).
    sidecars
        A face's notes to save with the model (see :func:`write_sidecar`), ``{name: dict}``.
    """
    from safetensors.torch import save_file

    d = Path(path)
    check_destination(d, overwrite)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    try:
        with atomic_directory(d) as tmp:
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": str(MODEL_FORMAT)})
            write_json(tmp / CONFIG_FILE, {"format": MODEL_FORMAT, "package": "convnetvae",
                                           **config})
            for name, data in (sidecars or {}).items():
                write_sidecar(tmp, name, data)
    except OSError as err:
        raise ConvNetVAEError(f"could not save the model to {str(d)!r}: {err.strerror or err}; "
                              "nothing was changed there") from None
    return d


def check_destination(path: str | os.PathLike, overwrite: bool,
                      what: str = "model directory") -> Path:
    """Check that a model can be saved at ``path`` (before the work that makes it).

    ``path`` must be new, an empty directory, or (with ``overwrite``) a saved model; it must
    not be a file and its parent must be writable (:func:`~convnetvae.io_utils.check_writable`).
    ``what`` names it in messages (R: ``"model_dir"``).
    """
    d = Path(path)
    if d.is_dir() and any(d.iterdir()):
        if not overwrite:
            raise ConvNetVAEError(f"{d} exists and is not empty; pass overwrite=True")
        if not is_model_dir(d):
            raise ConvNetVAEError(
                f"{what} {str(d)!r} exists, is not empty and holds no ConvNetVAE model; refusing "
                "to replace it: give a new or empty directory")
    check_writable(d, what, kind="dir")
    return d


def read(path: str | os.PathLike) -> SavedModel:
    """Read and check a model directory's ``config.json`` (the weights are read on demand)."""
    d = Path(path)
    cfg_path = d / CONFIG_FILE
    if not d.is_dir() or not cfg_path.exists() or not (d / WEIGHTS_FILE).exists():
        left = [p for p in stale_siblings(d) if OLD_TAG in p.name and is_model_dir(p)]
        hint = (f"; a save that was killed left the previous model in {str(left[0])!r}: rename "
                "it to restore it") if left and not d.exists() else ""
        raise ConvNetVAEError(f"{d} is not a saved ConvNetVAE model (expected a directory "
                              f"with {CONFIG_FILE} and {WEIGHTS_FILE}){hint}")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConvNetVAEError(f"{cfg_path} is corrupted (not valid JSON): {err}") from None
    if not isinstance(config, dict) or config.get("package") != "convnetvae":
        raise ConvNetVAEError(f"{cfg_path} is not a convnetvae model config")
    fmt = config.get("format")
    if not isinstance(fmt, int) or fmt > MODEL_FORMAT:
        raise ConvNetVAEError(
            f"{d} was saved by a newer convnetvae (model format {fmt}, this version reads up "
            f"to {MODEL_FORMAT}); upgrade convnetvae")
    check_saved_config(config, str(cfg_path))
    return SavedModel(d, config)


def write_sidecar(path: str | os.PathLike, name: str, data: dict) -> None:
    """Keep a face's notes (``<name>.json``) beside a saved model."""
    write_json(Path(path) / f"{name}.json", data)


def read_sidecar(path: str | os.PathLike, name: str) -> dict:
    """A face's notes beside a saved model, ``{}`` when absent."""
    p = Path(path) / f"{name}.json"
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConvNetVAEError(f"{p} is corrupted (not valid JSON): {err}") from None
    if not isinstance(data, dict):
        raise ConvNetVAEError(f"{p} is damaged: expected a JSON object")
    return data


def check_saved_config(config: dict, where: str) -> None:
    """Check the structure of a saved model's ``config.json`` (see ``ConvNetVAE.save``).

    A damaged or hand-edited config raises a :class:`ConvNetVAEError` naming the field, instead
    of failing later with an unrelated error.

    Parameters
    ----------
    config
        The parsed JSON object.
    where
        The file, for messages.
    """
    def bad(field: str, want: str) -> ConvNetVAEError:
        return ConvNetVAEError(f"{where} is damaged: {field} must be {want}; re-save the model")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def str_list(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(s, str) for s in v)

    module, reg, bins = config.get("module"), config.get("registry"), config.get("bins")
    if not isinstance(module, dict):
        raise bad("'module'", "an object")
    if not isinstance(reg, dict):
        raise bad("'registry'", "an object")
    if not isinstance(bins, dict):
        raise bad("'bins'", "an object")
    mods = reg.get("modalities")
    if not str_list(mods) or not mods or len(set(mods)) != len(mods):
        raise bad("registry.modalities", "a non-empty list of distinct layer names")
    for key in ("batch_key", "labels_key", "mask_key"):
        if reg.get(key) is not None and not isinstance(reg.get(key), str):
            raise bad(f"registry.{key}", "a column name or null")
    cats = reg.get("batch_categories", [])
    if not str_list(cats) or len(set(cats)) != len(cats):
        raise bad("registry.batch_categories", "a list of distinct batch names")
    if not isinstance(reg.get("has_missing", False), bool):
        raise bad("registry.has_missing", "true or false")
    lengths = module.get("chrom_lengths")
    if not isinstance(lengths, list) or not lengths or not all(
            is_int(n) and n > 0 for n in lengths):
        raise bad("module.chrom_lengths", "a non-empty list of positive bin counts")
    if module.get("n_modalities") != len(mods):
        raise bad("module.n_modalities", f"the number of modalities ({len(mods)})")
    if module.get("n_batches") != max(1, len(cats)):
        raise bad("module.n_batches", f"the number of batches ({max(1, len(cats))})")
    chrom, start, end = bins.get("chrom"), bins.get("start"), bins.get("end")
    n = sum(lengths)
    if not str_list(chrom) or len(chrom) != n:
        raise bad("bins.chrom", f"a list of {n} chromosome names")
    for field, v in (("start", start), ("end", end)):
        if not isinstance(v, list) or len(v) != n or not all(is_int(x) for x in v):
            raise bad(f"bins.{field}", f"a list of {n} integers")
    names = bins.get("names")
    if names is not None and (not str_list(names) or len(names) != n):
        raise bad("bins.names", f"a list of {n} bin names or null")
    if any(s < 0 or e <= s for s, e in zip(start, end)):
        raise bad("bins.start/end", "0-based half-open intervals (0 <= start < end)")
    hist = config.get("history", [])
    if not isinstance(hist, list) or not all(isinstance(r, dict) for r in hist):
        raise bad("'history'", "a list of per-epoch objects")
    if not isinstance(config.get("train_config", {}), dict):
        raise bad("'train_config'", "an object")
    if not is_int(config.get("seed", 0)):
        raise bad("'seed'", "an integer")
