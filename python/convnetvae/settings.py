"""One definition of every user-facing setting: default, type, bounds or choices, one-line doc.

Every face is derived from these dataclasses or checked against them:

==========================  ================================================================
face                        how
==========================  ================================================================
Python API                  ``ConvNetVAE(...)`` / ``.train(...)`` validate through
                            :func:`make`; tests check their signatures and docstrings
command line                :func:`add_arguments` makes the flags of ``convnetvae train``
                            (and the shared ones of ``demo``, ``embed``, ``benchmark``)
workbench Train panel       :func:`widget_parameters` makes the form's parameters
R bridge                    :func:`validate` with ``names="r"`` checks what R sends
R package                   ``R/settings.R`` (written by :func:`write_r_files`) drives R's
                            type checks; tests check the R formals, roxygen and Rd against
                            the schema
==========================  ================================================================

Adding a setting is one entry below: ``name: type = setting(default, "one-line doc", ...)``.
Optional values are typed ``X | None``; ``choices`` is a tuple of values or a function that
checks a value (architecture names come from the registry).
"""

from __future__ import annotations

import argparse
import functools
import math
import numbers
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

import numpy as np

from .errors import ConvNetVAEError
from .model.registry import DEFAULT_ARCHITECTURE, INPUT_TRANSFORMS, LIKELIHOODS, check_architecture, preset_names

Names = Literal["python", "r", "cli"]


@dataclass(frozen=True)
class Spec:
    """How one setting is bounded, documented and shown (the ``metadata`` of its field).

    Attributes
    ----------
    doc
        One line: the canonical description every face shows (faces may add more after it).
    min, max
        Bounds (inclusive unless ``min_open`` / ``max_open``).
    choices
        A tuple of allowed values, or a function returning the normalised value or raising
        :class:`ConvNetVAEError`.
    listed
        For a function ``choices``: the values faces list (dropdowns, help).
    r
        The R argument name (default: the name with dots); ``False``: not given from R.
    r_formal
        An explicit formal argument of every ``RunConvNetVAE`` method (others go through ``...``).
    cli
        ``False``: no command-line flag. Otherwise the flag is ``--name-with-dashes``.
    cli_aliases
        Further flags (kept for compatibility).
    widget
        Shown in the workbench's Train panel; a dict gives widget options (``min``, ``max``,
        ``choices``, ``widget``) where the form narrows the schema's range.
    """

    doc: str
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    max_open: bool = False
    choices: tuple | Callable[[Any], Any] | None = None
    listed: Callable[[], Sequence[Any]] | None = None
    r: str | bool | None = None
    r_formal: bool = False
    cli: bool = True
    cli_aliases: tuple[str, ...] = ()
    widget: bool | dict = False


def setting(default: Any, doc: str, **spec: Any) -> Any:
    """A dataclass field carrying its :class:`Spec`."""
    return field(default=default, metadata={"spec": Spec(doc, **spec)})


# ---------------------------------------------------------------------------- the schema
@dataclass
class ModelSettings:
    """Settings of the model (``ConvNetVAE(adata, ...)``)."""

    architecture: str = setting(
        DEFAULT_ARCHITECTURE, "Model architecture: auto (one conv layer sized to the number of "
        "bins; 8 channels when the loadings are tied, otherwise 32), e.g. conv-k31s31, "
        "conv-k11s3x2 (two conv layers of kernel 11, stride 3) or "
        "fc-l1 (the FC-VAE baseline).",
        choices=check_architecture, listed=preset_names, r_formal=True, widget=True)
    likelihood: str = setting(
        "poisson", "Count likelihood: poisson (the paper) or nb (negative binomial, one "
        "dispersion per bin and modality).", choices=LIKELIHOODS, r_formal=True, widget=True)
    n_latent: int = setting(30, "Dimension of the embedding (latent space).", min=1,
                            r_formal=True, widget={"min": 2, "max": 100})
    n_hidden: int = setting(128, "Width of the fully connected hidden layer.", min=1)
    dropout: float = setting(0.2, "Dropout rate.", min=0.0, max=1.0, max_open=True)
    chrom_aware: bool = setting(
        True, "Pad each chromosome on its own so no kernel mixes bins of two chromosomes "
        "(False: the paper's kernels run across chromosome boundaries).")
    batch_offsets: bool = setting(
        True, "Give the decoder a learned log-rate offset per batch, modality and bin (False: "
        "the paper's decoder).")
    input_transform: str = setting(
        "tfidf", "What the encoder sees: depth (log of counts scaled to the median depth), "
        "tfidf (the same weighted by inverse bin frequency) or log1p (the paper's log(1 + x)).",
        choices=INPUT_TRANSFORMS)
    bin_offsets: bool = setting(
        True, "Give the decoder a log-rate offset per modality and bin, started at the data's "
        "mean profile (False: the paper's decoder).")
    bin_loadings: bool | None = setting(
        None, "Add a learned loading per modality, bin and latent dimension to the decoder's "
        "log-rates, a linear decoder beside the convolutional one; None: on up to 100,000 bins "
        "x modalities (False: the paper's decoder).")
    encoder_loadings: bool | None = setting(
        None, "Add a learned weight per modality, bin and latent dimension from the encoder's "
        "input to the latent mean, a linear encoder beside the convolutional one; None: on up "
        "to 100,000 bins x modalities (False: the paper's encoder).")
    tie_loadings: bool | None = setting(
        None, "Tie the encoder's free weights to the decoder's bin loadings (the loadings times a "
        "learnt gain per latent dimension, as PCA's encoder is its decoder transposed) instead "
        "of a matrix of their own; None: tied when both kinds of loadings are on and at most "
        "half of the counts are non-zero, as in peak data (True: always, False: a matrix of "
        "their own).")
    loadings_start: str = setting(
        "zero", "How the free bin and encoder loadings start: zero, lsi (the directions of a "
        "truncated SVD of the encoder's input, as in LSI), or auto (lsi when at most half of "
        "the input is non-zero, as in peak data).", choices=("zero", "lsi", "auto"))
    seed: int = setting(0, "Random seed of the weights, the validation split, the shuffling "
                           "and the sampling.", min=0, r_formal=True)


@dataclass
class TrainSettings:
    """Settings of training (``model.train(...)``)."""

    max_epochs: int | None = setting(
        None, "Passes over the training cells; None chooses the length from the data (a "
        "one-cycle learning-rate schedule); the paper: 300 or 200.",
        min=1, r_formal=True, cli_aliases=("--epochs",), widget={"placeholder": "(auto)"})
    time_budget: float = setting(
        1.0, "Training time of an automatic-length run (max_epochs=None) as a multiple of the "
        "default budget (1 minute per 1,000 cells per modality, up to three, on 2 CPU cores): "
        "4 lets it train about four times as long. The length still stops at what the data "
        "need (about 1,000 optimiser steps, at most 200 epochs). Small sets gain from more "
        "(docs/benchmarks.md).", min=0.0, min_open=True, widget={"min": 0.25, "max": 16.0})
    time_guard: bool = setting(
        True, "Keep an automatic-length run within its budget (time_budget times the default "
        "budget, at least 10 seconds) on a slower or busier machine: when the first epochs "
        "show that the planned length would overrun it, the rest of the learning-rate "
        "schedule is compressed into the epochs that fit, with a warning. False: always the "
        "planned length, the same on every machine.")
    batch_size: int | None = setting(
        None, "Cells per minibatch; None: 128, or fewer (down to 32) when the data are small, "
        "so that an epoch has at least 16 optimiser steps.", min=2, r_formal=True,
        widget={"placeholder": "(auto)"})
    lr: float | None = setting(
        None, "Adam learning rate: the peak of the one-cycle schedule or the constant rate "
        "(None: 1e-2 one-cycle, 1e-3 constant as the paper).", min=0.0, min_open=True,
        r="learning.rate", r_formal=True, widget={"placeholder": "(auto)"})
    lr_schedule: str = setting(
        "auto", "Learning-rate schedule: onecycle (warm-up, then cosine decay), constant (the "
        "paper), or auto (onecycle when max_epochs is None, else constant).",
        choices=("auto", "onecycle", "constant"))
    validation_size: float = setting(
        0.1, "Fraction of cells held out for validation and early stopping (0 = none).",
        min=0.0, max=1.0, max_open=True)
    early_stopping: bool = setting(
        True, "With the constant schedule, stop when the validation loss has not improved for "
        "patience epochs and keep the best weights (False: train exactly max_epochs, as the "
        "paper).", widget=True)
    patience: int = setting(20, "Epochs without improvement before early stopping.", min=1)
    min_delta: float = setting(0.0, "Smallest decrease of the validation loss that counts as an "
                                    "improvement.", min=0.0)
    kl_warmup_epochs: int | None = setting(
        None, "Linearly increase the KL weight over this many epochs (0 = off, as the paper); "
        "None: over the first half of a one-cycle run, off with the constant schedule.", min=0,
        widget={"placeholder": "(auto)"})
    grad_clip: float | None = setting(
        100.0, "Clip the gradient norm to this value (None = off).", min=0.0, min_open=True)
    weight_decay: float = setting(
        0.0, "Adam weight decay (L2) of every weight but the per-batch offsets.", min=0.0)
    seed: int | None = setting(
        None, "Seed of the split, shuffling and sampling (None: the model's seed).", min=0,
        r=False, cli=False)
    device: str = setting("auto", "Device: auto (CUDA when present, else CPU), cpu, cuda, "
                                  "cuda:1 ...", r_formal=True)
    mixed_precision: bool = setting(
        False, "bfloat16 autocast of the forward pass (meant for GPUs; weights stay float32).")
    progress: bool = setting(True, "Show a progress bar with the loss.", r=False, cli=False)
    checkpoint_dir: str | None = setting(
        None, "Directory for resumable checkpoints (None = none).")
    checkpoint_every: int = setting(1, "Write a checkpoint every this many epochs.", min=1)
    resume: bool = setting(False, "Continue from the last checkpoint in checkpoint_dir.")
    resume_allow_changes: bool = setting(
        False, "With resume: continue even though the data's counts or the run's settings differ "
        "from the checkpoint's (the differences are recorded in train_config).")
    n_threads: int | None = setting(None, "CPU threads for torch (None: torch's choice).",
                                    min=1)
    shuffle_block_size: int | None = setting(
        None, "Shuffle blocks of this many consecutive cells instead of single cells, for long "
        "reads from disk (None: shuffle cells freely).", min=1)


@dataclass
class DataSettings:
    """Settings of putting features on bins (the R bridge, ``convnetvae bin``)."""

    bin_size: int = setting(10_000, "Width in bp of the genomic windows features are rebinned "
                                    "into.", min=1, r_formal=True, cli=False)
    n_bins: int | None = setting(
        25_000, "Keep the union of each modality's highest-count bins up to this number (the "
        "paper's rule; None keeps all).", min=1, r_formal=True, cli=False)


@dataclass
class EmbedSettings:
    """Settings of embedding cells with a trained model (``get_latent_representation``)."""

    batch_size: int = setting(512, "Cells per forward pass when embedding.", min=1)
    device: str = setting("auto", "Device: auto (CUDA when present, else CPU), cpu, cuda, "
                                  "cuda:1 ...")


GROUPS: dict[str, type] = {"model": ModelSettings, "train": TrainSettings, "data": DataSettings,
                           "embed": EmbedSettings}


# ---------------------------------------------------------------------------- one setting
@dataclass(frozen=True)
class Setting:
    """A resolved schema entry: name, group, type, default and :class:`Spec`."""

    name: str
    group: str
    type: type
    optional: bool
    default: Any
    spec: Spec

    @property
    def doc(self) -> str:
        return self.spec.doc

    @property
    def r_name(self) -> str | None:
        if self.spec.r is False:
            return None
        return self.spec.r if isinstance(self.spec.r, str) else self.name.replace("_", ".")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def shown(self, names: Names) -> str:
        if names == "r":
            return self.r_name or self.name
        if names == "cli":
            return self.flag
        return self.name

    def listed(self) -> list[Any]:
        """Values faces list (a dropdown), or ``[]`` for free values."""
        if isinstance(self.spec.choices, tuple):
            return list(self.spec.choices)
        return list(self.spec.listed()) if self.spec.listed else []

    def describe(self, names: Names = "python") -> str:
        """``"a whole number >= 1"``, ``"one of 'poisson', 'nb'"``...: what a value must be."""
        sp = self.spec
        if isinstance(sp.choices, tuple):
            what = "one of " + ", ".join(repr(c) for c in sp.choices)
        else:
            what = {int: "a whole number", float: "a number", str: "a string",
                    bool: "TRUE or FALSE" if names == "r" else "True or False"}[self.type]
            lo = None if sp.min is None else (">" if sp.min_open else ">=") + f" {sp.min:g}"
            hi = None if sp.max is None else ("<" if sp.max_open else "<=") + f" {sp.max:g}"
            bounds = " and ".join(b for b in (lo, hi) if b)
            what += f" {bounds}" if bounds else ""
        return what + ((" or NULL" if names == "r" else " or None") if self.optional else "")

    def check(self, value: Any, names: Names = "python") -> Any:
        """The value coerced to the setting's type, or a :class:`ConvNetVAEError` naming it."""
        if value is None:
            if self.optional:
                return None
            raise self._bad(value, names)
        v = self._coerce(value)
        if v is MISSING:
            raise self._bad(value, names)
        sp = self.spec
        if callable(sp.choices):
            try:
                return sp.choices(v)
            except ConvNetVAEError as err:
                raise ConvNetVAEError(f"`{self.shown(names)}`: {err}") from None
        if isinstance(sp.choices, tuple) and v not in sp.choices:
            raise self._bad(value, names)
        if self.type in (int, float):
            if sp.min is not None and (v < sp.min or (sp.min_open and v == sp.min)):
                raise self._bad(value, names)
            if sp.max is not None and (v > sp.max or (sp.max_open and v == sp.max)):
                raise self._bad(value, names)
        return v

    def _coerce(self, value: Any) -> Any:
        """The value as the setting's type, or ``MISSING`` when it is not one (no strings for
        numbers, no numbers for booleans; whole floats are ints, as R sends them)."""
        is_bool = isinstance(value, (bool, np.bool_))
        if self.type is bool:
            return bool(value) if is_bool else MISSING
        if self.type is str:
            return value if isinstance(value, str) else MISSING
        if is_bool or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            return MISSING
        num = float(value)
        if self.type is int:
            return int(num) if num == int(num) else MISSING
        return num

    def _bad(self, value: Any, names: Names) -> ConvNetVAEError:
        return ConvNetVAEError(f"`{self.shown(names)}` must be {self.describe(names)}; got {value!r}")


@functools.cache
def _resolved(cls: type) -> tuple[Setting, ...]:
    group = next(g for g, c in GROUPS.items() if c is cls)
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        tp = hints[f.name]
        args = typing.get_args(tp)
        optional = type(None) in args
        if optional:
            tp = next(a for a in args if a is not type(None))
        out.append(Setting(f.name, group, tp, optional, f.default, f.metadata["spec"]))
    return tuple(out)


def schema(cls: type) -> list[Setting]:
    """The settings of one group (``ModelSettings``...), in declaration order."""
    return list(_resolved(cls))


def get(cls: type, name: str) -> Setting:
    """One setting of a group by its Python name."""
    for s in _resolved(cls):
        if s.name == name:
            return s
    raise KeyError(name)


def default(cls: type, name: str) -> Any:
    """The default of one setting."""
    return get(cls, name).default


def all_settings() -> list[Setting]:
    """Every setting of every group."""
    return [s for cls in GROUPS.values() for s in _resolved(cls)]


# ---------------------------------------------------------------------------- validation
def validate(cls: type, values: Mapping[str, Any], names: Names = "python") -> dict[str, Any]:
    """Check and coerce ``values`` (Python names) against one group; unknown names are errors."""
    known = {s.name: s for s in _resolved(cls)}
    unknown = [k for k in values if k not in known]
    if unknown:
        shown = [known[k].shown(names) if k in known else
                 (k.replace("_", ".") if names == "r" else k) for k in unknown]
        raise ConvNetVAEError(f"unknown setting(s) {shown}; known: "
                              f"{[s.shown(names) for s in known.values()]}")
    checked = {k: known[k].check(v, names) for k, v in values.items()}
    together = _TOGETHER.get(cls)
    if together is not None:
        together(checked, known, names)
    return checked


def _train_length_together(values: Mapping[str, Any], known: Mapping[str, Setting],
                           names: Names) -> None:
    """A fixed ``max_epochs`` leaves ``time_budget`` (of automatic-length runs) nothing to do."""
    default = known["time_budget"].default
    budget, epochs = values.get("time_budget", default), values.get("max_epochs")
    if epochs is not None and budget != default:
        tb, me = known["time_budget"].shown(names), known["max_epochs"].shown(names)
        none = "NULL" if names == "r" else "None"
        raise ConvNetVAEError(
            f"{tb}={budget:g} sets the length of automatic training, but {me}={epochs} fixes "
            f"it: give one of them ({tb} with {me}={none})")


#: checks of settings that depend on each other, per group
_TOGETHER: dict[type, Callable[[Mapping[str, Any], Mapping[str, Setting], Names], None]] = {
    TrainSettings: _train_length_together}


def make(cls: type, names: Names = "python", **values: Any) -> Any:
    """An instance of ``cls`` from validated ``values`` (missing ones take their defaults)."""
    return cls(**validate(cls, values, names))


def split(values: Mapping[str, Any], groups: Sequence[type], names: Names = "python"
          ) -> list[dict[str, Any]]:
    """Assign each of ``values`` to the first group that has it and validate; unknown is an error.

    Returns one dict per group (in the order of ``groups``).
    """
    out: list[dict[str, Any]] = [{} for _ in groups]
    for k, v in values.items():
        for i, cls in enumerate(groups):
            if any(s.name == k for s in _resolved(cls)):
                out[i][k] = v
                break
        else:
            known = [s.shown(names) for cls in groups for s in _resolved(cls)]
            shown = k.replace("_", ".") if names == "r" else k
            raise ConvNetVAEError(f"unknown argument {shown!r}; known: {sorted(set(known))}")
    return [validate(cls, d, names) for cls, d in zip(groups, out)]


# ---------------------------------------------------------------------------- command line
def _cli_type(s: Setting) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if s.optional and text.strip().lower() in ("none", ""):
            return None
        try:
            value = s.type(text) if s.type is not int else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {s.describe('cli')}, got {text!r}") from None
        try:
            return s.check(value, "cli")
        except ConvNetVAEError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = s.type.__name__
    return parse


def add_arguments(parser: argparse.ArgumentParser, cls: type,
                  only: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> list[str]:
    """Add one flag per setting of ``cls`` (``--max-epochs``; booleans get ``--no-...``).

    Returns the names added (see :func:`from_args`).
    """
    added = []
    for s in _resolved(cls):
        if not s.spec.cli or s.name in exclude or (only is not None and s.name not in only):
            continue
        help_ = s.doc.rstrip(".")
        listed = s.listed()
        if listed and callable(s.spec.choices):
            help_ += f"; listed: {', '.join(map(str, listed))}"
        if s.type is bool:
            parser.add_argument(s.flag, *s.spec.cli_aliases, dest=s.name, default=s.default,
                                action=argparse.BooleanOptionalAction, help=help_)
        else:
            parser.add_argument(s.flag, *s.spec.cli_aliases, dest=s.name, default=s.default,
                                type=_cli_type(s), help=help_ + f" (default {s.default})",
                                metavar=s.name.upper() if not isinstance(s.spec.choices, tuple)
                                else "{" + ",".join(map(str, s.spec.choices)) + "}")
        added.append(s.name)
    return added


def from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values of ``cls``'s settings in parsed arguments (those the parser has)."""
    return {s.name: getattr(args, s.name) for s in _resolved(cls) if hasattr(args, s.name)}


# ---------------------------------------------------------------------------- workbench
def widget_parameters(cls: type) -> list[tuple[str, Any, Any, str]]:
    """``(name, annotation, default, doc)`` of the settings the Train panel shows.

    Annotations follow :mod:`convnetvae.widgets.panel`: ``Literal[...]`` for choices,
    ``Annotated[int, {"min": .., "max": ..}]`` for bounded numbers, ``X | None`` for optional ones.
    """
    out = []
    for s in _resolved(cls):
        if not s.spec.widget:
            continue
        opts = dict(s.spec.widget) if isinstance(s.spec.widget, dict) else {}
        choices = opts.pop("choices", None) or s.listed()
        if choices:
            ann: Any = Literal[tuple(choices)]
        elif s.type in (int, float) and s.optional:
            ann = s.type  # a text box where empty means None (the panel's optional numbers)
        elif s.type in (int, float):
            bounds = {"min": s.spec.min, "max": s.spec.max}
            bounds = {k: v for k, v in bounds.items() if v is not None}
            ann = typing.Annotated[s.type, {**bounds, **opts}] if (bounds or opts) else s.type
        else:
            ann = s.type
        if s.optional:
            ann = ann | None
        out.append((s.name, ann, s.default, s.doc))
    return out


# ---------------------------------------------------------------------------- R
def r_rows() -> list[dict[str, str]]:
    """One row per setting given from R: what ``R/settings.R`` holds."""
    rows = []
    for s in all_settings():
        if s.r_name is None:
            continue
        sp = s.spec
        rows.append({
            "group": s.group, "name": s.name, "r_name": s.r_name,
            "type": {int: "integer", float: "double", bool: "logical", str: "character"}[s.type],
            "optional": "TRUE" if s.optional else "FALSE",
            "default": _r_literal(s.default),
            "min": "NA" if sp.min is None else repr(float(sp.min)),
            "max": "NA" if sp.max is None else repr(float(sp.max)),
            "min_open": "TRUE" if sp.min_open else "FALSE",
            "max_open": "TRUE" if sp.max_open else "FALSE",
            "choices": ("c(" + ", ".join(_r_literal(c) for c in sp.choices) + ")"
                        if isinstance(sp.choices, tuple) else "NULL"),
            "formal": "TRUE" if sp.r_formal else "FALSE",
            "doc": s.doc,
        })
    return rows


def _r_literal(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def r_source() -> str:
    """The settings table of ``R/settings.R`` (see :func:`write_r_files`)."""
    lines = [
        "# Generated from python/convnetvae/settings.py by",
        "#   python -m convnetvae.settings --write-r .",
        "# Do not edit by hand: tests/python/test_settings.py fails when it is out of date.",
        "# Per group, one entry per setting given from R (by its R name): the Python name, type,",
        "# default, bounds, choices and one-line doc. .check_setting() in R/validate.R applies",
        "# these rules before Python is started; Python checks them again (and the domain).",
        "",
        ".settings <- list(",
    ]
    groups = []
    rows = r_rows()
    for group in GROUPS:
        entries = []
        for r in (r for r in rows if r["group"] == group):
            doc = r["doc"].replace("\\", "\\\\").replace('"', '\\"')
            entries.append(
                f"    `{r['r_name']}` = list(\n"
                f"      name = \"{r['name']}\", type = \"{r['type']}\", "
                f"optional = {r['optional']}, default = {r['default']},\n"
                f"      min = {r['min']}, max = {r['max']}, min_open = {r['min_open']}, "
                f"max_open = {r['max_open']},\n"
                f"      choices = {r['choices']}, formal = {r['formal']},\n"
                f"      doc = \"{doc}\"\n    )")
        groups.append(f"  {group} = list(\n" + ",\n".join(entries) + "\n  )")
    lines.append(",\n".join(groups))
    lines.append(")")
    return "\n".join(lines) + "\n"


#: R help pages with a generated "Further settings" section: page -> the groups it lists
R_DOC_PAGES = {"RunConvNetVAE": ("model", "train"), "ProjectConvNetVAE": ("embed",)}
RD_BEGIN = "% Further settings: generated by python -m convnetvae.settings --write-r"
RD_END = "% end of the generated section"


def _r_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return _r_literal(v)


def _rd_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("{", "\\{").replace(
        "}", "\\}")


def r_further_settings(page: str) -> list[tuple[str, str]]:
    """``(r_name = default, doc)`` of the settings a page's ``...`` passes on (not formals)."""
    groups = R_DOC_PAGES[page]
    return [(f"{s.r_name} = {_r_value(s.default)}", s.doc) for s in all_settings()
            if s.group in groups and s.r_name is not None and not s.spec.r_formal]


def r_roxygen_sections() -> str:
    """Roxygen blocks adding the "Further settings" section to each page (in R/settings.R)."""
    blocks = []
    for page in R_DOC_PAGES:
        lines = [f"#' @rdname {page}", "#' @section Further settings:",
                 "#' Passed through \\code{...} to Python, with their defaults:", "#' \\describe{"]
        for head, doc in r_further_settings(page):
            lines.append(f"#'   \\item{{\\code{{{_rd_escape(head)}}}}}{{{_rd_escape(doc)}}}")
        lines += ["#' }", f"#' @name {page}", "NULL"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def rd_section(page: str) -> str:
    """The Rd text of a page's "Further settings" section, between the markers."""
    lines = [RD_BEGIN, "\\section{Further settings}{",
             "Passed through \\code{...} to Python, with their defaults:", "\\describe{"]
    for head, doc in r_further_settings(page):
        lines.append(f"  \\item{{\\code{{{_rd_escape(head)}}}}}{{{_rd_escape(doc)}}}")
    lines += ["}", "}", RD_END]
    return "\n".join(lines) + "\n"


def update_rd(text: str, page: str) -> str:
    """``text`` of ``man/<page>.Rd`` with its generated section replaced (or added before
    ``\\examples``)."""
    section = rd_section(page)
    if RD_BEGIN in text:
        a = text.index(RD_BEGIN)
        b = text.index(RD_END, a) + len(RD_END) + 1
        return text[:a] + section + text[b:]
    i = text.index("\\examples{")
    return text[:i] + section + text[i:]


def write_r_files(root: str) -> list[str]:
    """Write ``R/settings.R`` and the generated sections of ``man/*.Rd`` under ``root``."""
    from pathlib import Path

    base = Path(root)
    written = [base / "R" / "settings.R"]
    written[0].write_text(r_source() + "\n" + r_roxygen_sections(), encoding="utf-8")
    for page in R_DOC_PAGES:
        rd = base / "man" / f"{page}.Rd"
        rd.write_text(update_rd(rd.read_text(encoding="utf-8"), page), encoding="utf-8")
        written.append(rd)
    return [str(w) for w in written]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convnetvae.settings --write-r .`` (from the repository root)."""
    p = argparse.ArgumentParser(prog="python -m convnetvae.settings", description=__doc__)
    p.add_argument("--write-r", metavar="ROOT",
                   help="write R/settings.R and the settings sections of man/*.Rd under the R "
                        "package's ROOT")
    args = p.parse_args(argv)
    if args.write_r:
        for path in write_r_files(args.write_r):
            print(f"wrote {path}")
    else:
        for s in all_settings():
            print(f"{s.group:6s} {s.name:20s} {s.default!r:14s} {s.describe():40s} {s.doc}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
