"""The notebook workbench: panels from plain functions, views, and a napari-like Workbench.

``panel(func)`` turns an annotated function into an ipywidgets form; ``Workbench(adata)``
shows an embedding and genome tracks with docked panels (data, train, embed & cluster,
evaluate, and any function added with ``workbench.add_panel(func)``). Only standard
ipywidgets and matplotlib PNGs: it works in JupyterLab, Notebook 7, VS Code and Voila.
"""

from .annotations import Layer, ObsColumn
from .panel import Panel, panel
from .workbench import Workbench

__all__ = ["Layer", "ObsColumn", "Panel", "Workbench", "panel"]
