"""How an ssh target starts a run's agent: a process, or a container when an image is named.

The choice is made per run: a target attached with ``--docker-image`` runs every run
in a container, any other runs a process unless the run's own spec names an image
(``environment.docker_image``). Later calls (status, cancel, clean-up) find which it
was from the marker the container launcher leaves in the local run folder.
"""

from __future__ import annotations

from jupyter_compute.targets.base import Launcher, ProcessLauncher
from jupyter_compute.targets.ssh.container import ContainerCLILauncher, marker

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.targets.base import Host, SubmitContext
    from jupyter_compute.workspace import Workspace


class ProcessOrContainer(Launcher):
    """A ``ProcessLauncher`` or a ``ContainerCLILauncher``, chosen for each run."""

    options = ContainerCLILauncher.options

    def __init__(self, name: str, config: dict[str, Any], workspace: Workspace) -> None:
        super().__init__(name, config, workspace)
        self.process = ProcessLauncher(name, config, workspace)
        self.container = ContainerCLILauncher(name, config, workspace)

    def for_spec(self, spec: RunSpec | None) -> Launcher:
        """The launcher for a new run of ``spec``."""
        return self.container if self.container.image(spec) else self.process

    def for_run(self, run_id: str) -> Launcher:
        """The launcher that started run ``run_id``."""
        if marker(self.workspace.run_dir(run_id)) is not None:
            return self.container
        return self.process

    def validate(self, spec: RunSpec) -> None:
        self.for_spec(spec).validate(spec)

    def check(self, host: Host) -> None:
        self.for_spec(None).check(host)

    def prepare(self, host: Host) -> None:
        self.container.prepare(host)  # nothing to do for either, today

    def agent_spec(self, host: Host, ctx: SubmitContext) -> None:
        self.for_spec(ctx.spec).agent_spec(host, ctx)

    def sync(self, host: Host, ctx: SubmitContext) -> None:
        self.for_spec(ctx.spec).sync(host, ctx)

    def launch(self, host: Host, ctx: SubmitContext) -> None:
        self.for_spec(ctx.spec).launch(host, ctx)

    def alive(self, host: Host, run_id: str, status: dict[str, Any]) -> bool | None:
        return self.for_run(run_id).alive(host, run_id, status)

    def cancel(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        self.for_run(run_id).cancel(host, run_id, status)

    def ended(self, host: Host, run_id: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.for_run(run_id).ended(host, run_id, status)

    def abandon(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        self.for_run(run_id).abandon(host, run_id, status)
