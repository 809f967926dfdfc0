"""The Jupyter server extension behind JupyterLab's Compute sidebar.

It serves the workspace's targets and runs as JSON under
``<base_url>/jupyter-compute/api/`` (see ``handlers.py``); every handler calls the
same API as the CLI and the magics. Installing the package enables it (the
``jupyter-config/`` JSON is shipped as shared data); the workspace is the server's
root folder unless ``c.JupyterCompute.workspace`` names another one::

    jupyter lab --JupyterCompute.workspace=~/projects/mnist

Importing this module stays cheap: tornado and the handlers load only when the
server loads the extension.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

#: The labextension's name: package.json's ``name``, the shared-data folder and the
#: ``dest`` below are all this one string.
LABEXTENSION = "jupyter-compute"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_compute.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    # ``src`` is relative to the top-level package (``jupyter labextension develop .``
    # looks it up on ``jupyter_compute``); the built extension lives in the source tree.
    return [{"src": "../labextension/build", "dest": LABEXTENSION}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from jupyter_compute.server.handlers import setup_handlers

    setup_handlers(serverapp)
