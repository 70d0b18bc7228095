"""panel(): a form from an annotated function, driven headless by setting widget values."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal

import anndata as ad
import ipywidgets as w
import matplotlib
import numpy as np
import pandas as pd
import pytest

from convnetvae.errors import ConvNetVAEError
from convnetvae.widgets import Layer, ObsColumn, panel
from convnetvae.widgets.render import new_figure


class Colour(enum.Enum):
    red = 1
    blue = 2


@pytest.fixture(scope="module")
def adata() -> ad.AnnData:
    import scipy.sparse as sp

    obs = pd.DataFrame({
        "cell_type": pd.Categorical(["a", "b", "a", "c"]),
        "batch": ["s1", "s1", "s2", "s2"],
        "score": [0.1, 0.5, 0.2, 0.9],
    }, index=[f"c{i}" for i in range(4)])
    x = sp.csr_matrix(np.arange(12, dtype=np.int32).reshape(4, 3))
    return ad.AnnData(obs=obs, var=pd.DataFrame(index=["b0", "b1", "b2"]),
                      layers={"ATAC": x, "H3K27me3": x.copy()})


def test_every_supported_annotation_gets_its_widget_and_value(adata, tmp_path):
    def f(
        n: Annotated[int, {"min": 1, "max": 10}] = 3,
        k: int = 7,
        bounded: Annotated[int, {"min": 0}] = 2,
        x: float = 0.5,
        y: Annotated[float, {"min": 0.0, "max": 1.0}] = 0.25,
        mode: Literal["fast", "exact"] = "exact",
        colour: Colour = Colour.blue,
        flag: bool = True,
        name: str = "hello",
        where: Path = Path("/tmp"),
        column: ObsColumn = "batch",
        numeric: Annotated[str, ObsColumn(kind="numeric")] = "score",
        layers: list[Layer] = ("ATAC",),
        modes: list[Literal["u", "v", "w"]] = (),
        maybe: int | None = None,
        group: ObsColumn | None = None,
        note: str | None = None,
    ) -> dict:
        return dict(locals())

    p = panel(f, adata)
    # dropdowns are ipywidgets Dropdowns whose None choice shows its label (fields.Dropdown)
    kinds = {name: w.Dropdown if isinstance(wid, w.Dropdown) else type(wid)
             for name, wid in p.widgets.items()}
    assert kinds == {
        "n": w.IntSlider, "k": w.IntText, "bounded": w.BoundedIntText, "x": w.FloatText,
        "y": w.FloatSlider, "mode": w.Dropdown, "colour": w.Dropdown, "flag": w.Checkbox,
        "name": w.Text, "where": w.Text, "column": w.Dropdown, "numeric": w.Dropdown,
        "layers": w.SelectMultiple, "modes": w.SelectMultiple, "maybe": w.Text,
        "group": w.Dropdown, "note": w.Text,
    }
    assert (p.widgets["n"].min, p.widgets["n"].max) == (1, 10)
    assert list(p.widgets["column"].options) == [("cell_type", "cell_type"), ("batch", "batch"),
                                                 ("score", "score")]
    assert [o[1] for o in p.widgets["numeric"].options] == ["score"]
    assert [o[1] for o in p.widgets["layers"].options] == ["ATAC", "H3K27me3"]
    assert p.widgets["group"].options[0] == ("(none)", None)

    # defaults go through unchanged
    p.button.click()
    assert p.error is None
    assert p.result == dict(n=3, k=7, bounded=2, x=0.5, y=0.25, mode="exact", colour=Colour.blue,
                            flag=True, name="hello", where=Path("/tmp"), column="batch",
                            numeric="score", layers=["ATAC"], modes=[], maybe=None, group=None,
                            note=None)

    # a user edits every widget, then clicks run
    p.widgets["n"].value = 9
    p.widgets["k"].value = -4
    p.widgets["x"].value = 2.5
    p.widgets["y"].value = 0.75
    p.widgets["mode"].value = "fast"
    p.widgets["colour"].value = Colour.red
    p.widgets["flag"].value = False
    p.widgets["name"].value = "bye"
    p.widgets["where"].value = str(tmp_path)
    p.widgets["column"].value = "cell_type"
    p.widgets["layers"].value = ("ATAC", "H3K27me3")
    p.widgets["modes"].value = ("u", "w")
    p.widgets["maybe"].value = "12"
    p.widgets["group"].value = "batch"
    p.widgets["note"].value = "x"
    p.button.click()
    assert p.error is None
    assert p.result == dict(n=9, k=-4, bounded=2, x=2.5, y=0.75, mode="fast", colour=Colour.red,
                            flag=False, name="bye", where=tmp_path, column="cell_type",
                            numeric="score", layers=["ATAC", "H3K27me3"], modes=["u", "w"],
                            maybe=12, group="batch", note="x")
    assert isinstance(p.result["where"], Path)
    assert p.n_runs == 2
    # the slider cannot leave its bounds
    p.widgets["n"].value = 50
    assert p.widgets["n"].value == 10


def test_unannotated_parameters_follow_their_defaults_and_anndata_is_injected(adata):
    def f(data: ad.AnnData, steps=4, rate=0.1, verbose=False, label="x"):
        return data.n_obs, steps, rate, verbose, label

    p = panel(f, adata)
    assert set(p.widgets) == {"steps", "rate", "verbose", "label"}
    assert p(steps=6, verbose=True) == (4, 6, 0.1, True, "x")
    # without an AnnData the panel says how to give one, in the panel
    q = panel(f)
    q.run()
    assert isinstance(q.error, ConvNetVAEError)
    assert "adata=" in str(q.error)


def test_context_values_are_passed_not_shown():
    sentinel = object()

    def f(model, n: int = 2):
        return model, n

    p = panel(f, context={"model": sentinel})
    assert list(p.widgets) == ["n"]
    assert p.run() == (sentinel, 2)


def test_results_are_displayed_by_type():
    def table(n: int = 3) -> pd.DataFrame:
        return pd.DataFrame({"a": range(n)})

    def figure() -> object:
        fig = new_figure(2, 2)
        fig.add_subplot().plot([0, 1], [1, 0])
        return fig

    def printed() -> int:
        print("hello from the function")
        return 42

    def nothing() -> None:
        return None

    t = panel(table)
    t.run()
    assert isinstance(t.output.children[0], w.HTML) and "<table" in t.output.children[0].value
    f = panel(figure)
    f.run()
    img = f.output.children[0]
    assert isinstance(img, w.Image) and img.value[:8] == b"\x89PNG\r\n\x1a\n"
    pr = panel(printed)
    assert pr.run() == 42
    texts = [c.value for c in pr.output.children]
    assert "hello from the function" in texts[0] and "42" in texts[1]
    n = panel(nothing)
    n.run()
    assert n.output.children == () and n.error is None


def test_an_error_is_shown_in_the_panel_which_stays_usable():
    calls = []

    def fragile(fail: bool = True) -> str:
        calls.append(fail)
        if fail:
            raise RuntimeError("the bins do not line up")
        return "fine"

    p = panel(fragile)
    assert p.run() is None
    assert isinstance(p.error, RuntimeError)
    (box,) = p.output.children
    assert "convnetvae-error" in box._dom_classes
    assert "RuntimeError: the bins do not line up" in box.value
    assert "traceback" in box.value
    assert not p.button.disabled  # not a dead widget
    p.widgets["fail"].value = False
    p.button.click()
    assert p.error is None and p.result == "fine"
    assert [c.value for c in p.output.children] == ["<pre>&#x27;fine&#x27;</pre>"]
    assert calls == [True, False]


def test_obs_choices_follow_the_anndata(adata):
    def f(column: ObsColumn = "cell_type") -> str:
        return column

    p = panel(f)  # no AnnData yet: empty dropdown, a clear message on run
    assert p.widgets["column"].options == ()
    p.run()
    assert isinstance(p.error, ConvNetVAEError) and "adata" in str(p.error)
    p.set_adata(adata)
    assert p.widgets["column"].value == "cell_type"
    assert p.run() == "cell_type"
    b = adata.copy()
    b.obs["leiden"] = pd.Categorical(["0", "1", "0", "1"])
    p.set_adata(b)
    assert "leiden" in [o[1] for o in p.widgets["column"].options]
    assert p.widgets["column"].value == "cell_type"  # the choice survives a refresh


def test_categorical_obs_marker_excludes_continuous_columns(adata):
    def f(column: Annotated[str, ObsColumn(kind="categorical")]) -> str:
        return column

    p = panel(f, adata)
    assert [o[1] for o in p.widgets["column"].options] == ["cell_type", "batch"]


def test_options_docstrings_and_labels():
    def f(epochs: int = 10, lr: float = 1e-3) -> int:
        """Train for a while.

        Parameters
        ----------
        epochs
            Number of passes over the data.
        lr : float
            Learning rate.
        """
        return epochs

    p = panel(f, epochs={"min": 1, "max": 300, "label": "Epochs"}, lr={"widget": "box"},
              title="Training")
    assert isinstance(p.widgets["epochs"], w.IntSlider)
    assert p.widgets["epochs"].description == "Epochs"
    assert p.widgets["epochs"].tooltip == "Number of passes over the data."
    assert p.widgets["lr"].tooltip == "Learning rate."
    assert p.title == "Training" and p.description == "Train for a while."
    assert p.box.children[0].value == "<b>Training</b>"


def test_auto_call_runs_on_every_change():
    def f(n: Annotated[int, {"min": 0, "max": 5}] = 1) -> int:
        return n * 2

    p = panel(f, auto_call=True)
    p.widgets["n"].value = 4
    assert p.result == 8 and p.n_runs == 1


@pytest.mark.parametrize("bad, match", [
    (lambda x: x, "neither an annotation nor a default"),
    (lambda x=None: x, "neither an annotation nor a default"),
])
def test_unshowable_parameters_are_refused_with_a_clear_message(bad, match):
    with pytest.raises(ConvNetVAEError, match=match):
        panel(bad)


def test_unsupported_annotations_and_bad_options_name_the_parameter():
    def f(data: dict) -> None: ...

    with pytest.raises(ConvNetVAEError, match="parameter 'data' of f\\(\\).*context="):
        panel(f)

    def g(n: Annotated[int, {"min": 5, "max": 1}] = 3) -> None: ...

    with pytest.raises(ConvNetVAEError, match="min 5 > max 1"):
        panel(g)

    def h(n: Annotated[int, {"min": 0, "max": 3}] = 9) -> None: ...

    with pytest.raises(ConvNetVAEError, match="outside"):
        panel(h)
    with pytest.raises(ConvNetVAEError, match="not parameters"):
        panel(h, m={"max": 3})
    with pytest.raises(ConvNetVAEError, match="needs a function"):
        panel(3)


def test_set_values_rejects_unknown_names():
    def f(n: int = 1) -> int:
        return n

    p = panel(f)
    with pytest.raises(ConvNetVAEError, match="no editable parameter 'm'"):
        p.set_values(m=2)


def test_panel_displays_as_its_box():
    def f(n: int = 1) -> int:
        return n

    p = panel(f)
    bundle = p._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == p.box.model_id
    assert matplotlib.get_backend()  # views never switch the user's backend
