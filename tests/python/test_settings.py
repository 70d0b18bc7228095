"""One schema of settings (convnetvae.settings): every face takes its defaults, bounds and docs
from it, or is checked against it here (Python API, command line, workbench, R bridge, R package).
"""

from __future__ import annotations

import argparse
import inspect
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from convnetvae import settings
from convnetvae.errors import ConvNetVAEError
from convnetvae.model.registry import DEFAULT_ARCHITECTURE, preset_names
from convnetvae.settings import DataSettings, EmbedSettings, ModelSettings, TrainSettings, default, schema

ROOT = Path(__file__).resolve().parents[2]
#: parameters of the API methods that are objects, not settings
NOT_SETTINGS = {"self", "adata", "callback", "stop_event", "strategy"}


def _squash(text: str) -> str:
    """Whitespace-normalised text without Rd/roxygen markup, for 'contains the doc' checks."""
    text = re.sub(r"\\(code|emph)\{([^}]*)\}", r"\2", text)
    text = text.replace("#'", " ")
    return re.sub(r"\s+", " ", text).strip()


def _param_docs(doc: str) -> dict[str, str]:
    from convnetvae.widgets.fields import param_docs

    return param_docs(inspect.cleandoc(doc))


# ---------------------------------------------------------------------------- the schema itself
def test_every_setting_has_a_one_line_doc_and_a_valid_default():
    for s in settings.all_settings():
        assert s.doc and "\n" not in s.doc and s.doc.endswith((".", "...")), s.name
        assert s.check(s.default) == s.default, s.name  # defaults obey their own rules


def test_check_coerces_and_names_the_setting_in_each_face():
    n_latent = settings.get(ModelSettings, "n_latent")
    assert n_latent.check(30.0, "r") == 30 and isinstance(n_latent.check(30.0, "r"), int)
    import numpy as np

    assert n_latent.check(np.int64(7)) == 7  # numpy scalars are numbers too
    assert settings.get(TrainSettings, "early_stopping").check(np.bool_(False)) is False
    with pytest.raises(ConvNetVAEError):
        n_latent.check(True)  # a boolean is not a number
    with pytest.raises(ConvNetVAEError, match=r"`n.latent` must be a whole number >= 1"):
        n_latent.check(0, "r")
    with pytest.raises(ConvNetVAEError, match=r"`--n-latent` must be"):
        n_latent.check(2.5, "cli")
    with pytest.raises(ConvNetVAEError, match=r"`n_latent` must be"):
        n_latent.check("30")
    with pytest.raises(ConvNetVAEError, match="True or False"):
        settings.get(TrainSettings, "early_stopping").check(1)
    lr = settings.get(TrainSettings, "lr")
    with pytest.raises(ConvNetVAEError, match=r"`learning.rate` must be a number > 0"):
        lr.check(0.0, "r")
    assert settings.get(TrainSettings, "grad_clip").check(None) is None
    with pytest.raises(ConvNetVAEError, match="`likelihood` must be one of 'poisson', 'nb'"):
        settings.get(ModelSettings, "likelihood").check("zinb")
    with pytest.raises(ConvNetVAEError, match="unknown architecture"):
        settings.get(ModelSettings, "architecture").check("transformer")
    assert settings.get(ModelSettings, "architecture").check("CONV-K11S11") == "conv-k11s11"
    with pytest.raises(ConvNetVAEError, match=r"unknown argument 'no\.such'"):
        settings.split({"no_such": 1}, [ModelSettings, TrainSettings], names="r")


def test_one_seed_default_everywhere():
    # the R package and the bridge used 42, Python and the CLI 0: the schema says 0
    assert default(ModelSettings, "seed") == 0
    assert default(TrainSettings, "seed") is None  # training follows the model's seed


# ---------------------------------------------------------------------------- Python API
@pytest.mark.parametrize("method, cls", [("__init__", ModelSettings), ("train", TrainSettings)])
def test_api_signatures_and_docstrings_follow_the_schema(method, cls):
    from convnetvae.api import ConvNetVAE

    func = getattr(ConvNetVAE, method)
    params = {n: p.default for n, p in inspect.signature(func).parameters.items()
              if n not in NOT_SETTINGS}
    assert params == {s.name: s.default for s in schema(cls)}
    doc = ConvNetVAE.__doc__ if method == "__init__" else func.__doc__
    docs = _param_docs(doc)
    for s in schema(cls):
        assert _squash(s.doc) in _squash(docs.get(s.name, "")), (method, s.name)


def test_embedding_batch_size_follows_the_schema():
    from convnetvae.api import ConvNetVAE

    sig = inspect.signature(ConvNetVAE.get_latent_representation)
    assert sig.parameters["batch_size"].default == default(EmbedSettings, "batch_size")


# ---------------------------------------------------------------------------- command line
def _subparser(name: str) -> argparse.ArgumentParser:
    from convnetvae.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _flag_defaults(p: argparse.ArgumentParser) -> dict[str, object]:
    return {a.dest: a.default for a in p._actions if a.option_strings}


def test_cli_train_flags_come_from_the_schema():
    p = _subparser("train")
    flags = _flag_defaults(p)
    for cls in (ModelSettings, TrainSettings):
        for s in schema(cls):
            if s.spec.cli:
                assert flags[s.name] == s.default, s.name
            else:
                assert s.name not in flags or s.name == "seed", s.name
    base = ["--data", "x.h5ad", "--modalities", "A", "--out", "m"]
    args = p.parse_args(base + ["--epochs", "5", "--no-early-stopping", "--no-chrom-aware",
                                "--grad-clip", "none", "--architecture", "conv-k11s3x2"])
    assert args.max_epochs == 5 and args.early_stopping is False and args.chrom_aware is False
    assert args.grad_clip is None and args.architecture == "conv-k11s3x2"
    assert settings.from_args(args, ModelSettings)["architecture"] == "conv-k11s3x2"
    for bad in (["--batch-size", "1"], ["--architecture", "transformer"], ["--lr", "abc"]):
        with pytest.raises(SystemExit):
            p.parse_args(base + bad)
    assert all(name in p.format_help() for name in preset_names())


def test_other_subcommands_share_the_schema_defaults():
    demo = _flag_defaults(_subparser("demo"))
    assert demo["architecture"] == DEFAULT_ARCHITECTURE and demo["seed"] == 0
    embed = _flag_defaults(_subparser("embed"))
    assert embed["batch_size"] == default(EmbedSettings, "batch_size")
    assert embed["device"] == default(EmbedSettings, "device")
    bench = _flag_defaults(_subparser("benchmark"))
    for name in ("n_latent", "n_hidden", "likelihood"):
        assert bench[name] == default(ModelSettings, name)
    for name in ("batch_size", "lr", "device"):
        assert bench[name] == default(TrainSettings, name)
    binning = _flag_defaults(_subparser("bin"))
    assert binning["n_bins"] == str(default(DataSettings, "n_bins"))
    from convnetvae.evaluate.harness import BenchmarkConfig

    cfg = BenchmarkConfig(models=["lsi"], labels_key="x")
    assert (cfg.n_latent, cfg.lr, cfg.likelihood) == (30, default(TrainSettings, "lr"), "poisson")
    assert cfg.epochs is None  # the package's default training


# ---------------------------------------------------------------------------- workbench
def test_train_panel_is_built_from_the_schema(small_adata):
    from convnetvae.widgets import Workbench

    wb = Workbench(small_adata.copy())
    widgets = wb.trainer.panel.widgets
    shown = [s for cls in (ModelSettings, TrainSettings) for s in schema(cls) if s.spec.widget]
    assert [s.name for s in shown] + ["continue_training", "embed_when_done"] == list(widgets)
    for s in shown:
        empty = "" if s.optional and s.type in (int, float) else None  # a text box: empty = None
        assert widgets[s.name].value == (empty if s.default is None else s.default), s.name
        assert s.doc in widgets[s.name].tooltip, s.name
    assert [v for _, v in widgets["architecture"].options] == preset_names()


# ---------------------------------------------------------------------------- R bridge
def test_bridge_checks_settings_with_r_names():
    from convnetvae.r.bridge import _settings_from_r

    model, train, data, extra = _settings_from_r(
        {"architecture": "conv-k11s11", "max_epochs": 2.0, "n_bins": None, "verbose": False,
         "extra": {"patience": 3.0, "dropout": 0.1}})
    assert model == {"architecture": "conv-k11s11", "dropout": 0.1}
    assert train == {"max_epochs": 2, "patience": 3}
    assert data == {"bin_size": 10_000, "n_bins": None}
    assert extra == {"patience": 3, "dropout": 0.1}
    with pytest.raises(ConvNetVAEError, match=r"`n.latent` must be a whole number >= 1"):
        _settings_from_r({"n_latent": 0})
    with pytest.raises(ConvNetVAEError, match="given twice"):
        _settings_from_r({"lr": 0.1, "extra": {"lr": 0.2}})
    with pytest.raises(ConvNetVAEError, match=r"unknown argument 'no\.such'"):
        _settings_from_r({"extra": {"no_such": 1}})


# ---------------------------------------------------------------------------- R package
def test_r_settings_table_and_help_sections_are_up_to_date():
    text = (ROOT / "R" / "settings.R").read_text()
    assert text == settings.r_source() + "\n" + settings.r_roxygen_sections(), (
        "R/settings.R is out of date: run python -m convnetvae.settings --write-r .")
    for page in settings.R_DOC_PAGES:
        rd = (ROOT / "man" / f"{page}.Rd").read_text()
        assert settings.rd_section(page) in rd, (
            f"man/{page}.Rd is out of date: run python -m convnetvae.settings --write-r .")


R_METHODS = ("RunConvNetVAE.Seurat", "RunConvNetVAE.SingleCellExperiment",
             "RunConvNetVAE.default", "ProjectConvNetVAE.Seurat",
             "ProjectConvNetVAE.SingleCellExperiment", "ProjectConvNetVAE.default")


def _r_value(text: str) -> object:
    if text in ("TRUE", "FALSE"):
        return text == "TRUE"
    if text == "NULL":
        return None
    if text.startswith('"'):
        return text[1:-1]
    return float(text)


@pytest.fixture(scope="module")
def r_formals() -> dict[str, dict[str, str]]:
    """Formals of the R methods, parsed by R from the package sources (no install needed)."""
    if shutil.which("Rscript") is None:
        pytest.skip("R is not installed")
    code = ("for (f in list.files('R', full.names = TRUE)) source(f);"
            f"for (fn in c({', '.join(repr(m) for m in R_METHODS)})) {{"
            "fo <- formals(get(fn)); for (n in names(fo)) cat(fn, n,"
            " if (identical(fo[[n]], quote(expr = ))) '<missing>' else"
            " paste(deparse(fo[[n]]), collapse = ' '), sep = '\\t', fill = FALSE, '\\n')}")
    out = subprocess.run(["Rscript", "-e", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    formals: dict[str, dict[str, str]] = {m: {} for m in R_METHODS}
    for line in out.splitlines():
        fn, name, value = (line.rstrip("\t ").split("\t") + [""])[:3]
        formals[fn][name] = value.strip()
    return formals


def test_r_formals_take_the_schema_defaults(r_formals):
    groups = {"RunConvNetVAE": ("model", "train", "data"), "ProjectConvNetVAE": ("embed",)}
    for method, formals in r_formals.items():
        assert formals, method
        page = method.split(".")[0]
        by_r = {s.r_name: s for s in settings.all_settings()
                if s.group in groups[page] and s.r_name}
        for name, text in formals.items():
            if name in by_r:
                want = by_r[name].default
                got = _r_value(text)
                assert got == want, f"{method}({name} = {text}) but the schema says {want!r}"
        if page == "RunConvNetVAE":
            for s in by_r.values():
                assert (s.r_name in formals) == s.spec.r_formal, (method, s.r_name)
    # a formal shared by several methods has one default (names of the result aside)
    seen: dict[str, set[str]] = {}
    for formals in r_formals.values():
        for name, text in formals.items():
            seen.setdefault(name, set()).add(text)
    varying = {n for n, v in seen.items() if len(v) > 1}
    # (assays and model.dir are required where they have no default)
    assert varying <= {"assays", "model.dir", "reduction.name", "reduction.key"}, varying


def test_r_help_documents_every_formal_setting_with_the_schema_doc():
    src = (ROOT / "R" / "RunConvNetVAE.R").read_text()
    rd = (ROOT / "man" / "RunConvNetVAE.Rd").read_text()
    for s in settings.all_settings():
        if not s.spec.r_formal:
            continue
        m = re.search(rf"#' @param {re.escape(s.r_name)} (.*?)(?=\n#' @|\n[^#])", src, re.S)
        assert m and _squash(s.doc) in _squash(m.group(1)), f"roxygen @param {s.r_name}"
        m = re.search(rf"\\item{{{re.escape(s.r_name)}}}{{(.*?)}}\n", rd, re.S)
        assert m and _squash(s.doc) in _squash(m.group(1)), f"Rd \\item{{{s.r_name}}}"
