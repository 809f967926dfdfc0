"""What a Ray run's local folder records about its job, and clients to reach its cluster.

``launch`` writes ``ray.json`` into the run's local folder (address, submission id,
transport, request, the embedded cluster's name) just before it submits the job;
the job-log host and the launcher read it to find the job again, from any process.
"""

from __future__ import annotations

import threading

from jupyter_compute import protocol
from jupyter_compute.targets.ray.cluster import EmbeddedCluster
from jupyter_compute.targets.ray.jobs import JobsClient, token_from_env

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.workspace import Workspace

#: In the local run folder: where and how the run was submitted.
JOB_RECORD = "ray.json"


def job_record(workspace: Workspace, run_id: str) -> dict[str, Any] | None:
    """The run's ``ray.json``; None until the launcher has written it."""
    found = protocol.read_json(str(workspace.run_dir(run_id) / JOB_RECORD))
    return found if isinstance(found, dict) else None


class Clients:
    """The Jobs clients of one target, one per address and token; safe across threads.

    >>> Clients(ws, config).for_record(job_record(ws, run_id)).info(run_id)["status"]
    'RUNNING'
    """

    def __init__(self, workspace: Workspace, config: dict[str, Any]) -> None:
        self.workspace = workspace
        self.config = config
        self._lock = threading.Lock()
        self._made: dict[tuple[str, str | None], JobsClient] = {}

    def get(self, address: str, token: str | None) -> JobsClient:
        """The client of the head at ``address`` (made once)."""
        with self._lock:
            client = self._made.get((address, token))
            if client is None:
                client = self._made[(address, token)] = JobsClient(address, token=token)
            return client

    def for_record(self, rec: dict[str, Any]) -> JobsClient:
        """The client of the cluster a run's ``ray.json`` names."""
        if rec.get("cluster"):  # an embedded cluster: its token is in the workspace
            token = EmbeddedCluster(self.workspace.dir, rec["cluster"]).token()
        else:
            token = token_from_env(self.config.get("token_env"))
        if rec.get("ephemeral"):  # a cluster of one run: not worth keeping a client for
            return JobsClient(rec["address"], token=token)
        return self.get(rec["address"], token)
