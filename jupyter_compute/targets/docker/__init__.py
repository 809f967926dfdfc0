"""The ``docker`` kind: this machine × a container per run, on a Docker engine.

::

    jupyter-compute attach box --type docker --memory 4g --cpus 2
    jupyter-compute attach pinned --type docker --requirements requirements.txt
    jupyter-compute submit train.py --target box --wait

The engine must see this machine's files (a local engine, or one whose host shares
them): the run folder is bind-mounted, so reading logs, metrics and outputs is plain
file access, as on the local target (the host is ``LocalHost``). The launcher
(``launcher.py``) makes the image (``images.py``: found, built from a Dockerfile, or
with the requirements pip-installed once and reused), mounts the run folder, the
runtime and the snapshot (``mounts.py``: an overlay on the snapshot materialized
once, so a run copies nothing and cannot change it) and runs the same ``agent.py``
as everywhere as the container's main process, with the image's Python, so
``from jupyter_compute.tracking import get_run`` works in any image that has
Python 3. The container has no network unless ``--network host``, is labelled with
the run id, and is removed once someone sees the run end (unless
``--keep-container``). Engine errors become ``TargetError`` messages of one line
that say what to do.
"""

from __future__ import annotations

from jupyter_compute.targets.base import Target
from jupyter_compute.targets.docker.launcher import ContainerLauncher
from jupyter_compute.targets.local import LocalHost

__all__ = ["DockerTarget"]


class DockerTarget(Target):
    """Runs each run in a container of its own, on a local Docker engine.

    Example::

        >>> from jupyter_compute import attach, submit
        >>> attach("box", "docker", memory="1g", cpus=2.0)
        >>> submit("train.py", target="box").wait()
        <RunStatus.COMPLETED: 'Completed'>
    """

    kind = "docker"
    host_type = LocalHost
    launcher_type = ContainerLauncher
    #: The launcher's: ``python`` is the image's interpreter here, not the host's.
    options = ContainerLauncher.options
