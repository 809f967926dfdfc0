"""A small client of a Ray head's HTTP API: the Jobs REST API and the cluster status.

::

    jobs = JobsClient("http://127.0.0.1:8265")
    jobs.submit("python -u train.py", submission_id="run-1", entrypoint_num_cpus=1)
    jobs.info("run-1")["status"]            # "PENDING" … "SUCCEEDED"
    jobs.logs("run-1")                       # the driver's whole log so far
    jobs.stop("run-1")

These are the endpoints Ray's ``JobSubmissionClient`` calls (``/api/jobs/…``,
``/api/packages/…``; Ray documents them as the Jobs REST API) and the dashboard's
``/api/cluster_status``, ``/api/v0/nodes`` and ``/events``. Talking HTTP with the
standard library rather than through the SDK keeps ``import ray`` (~2.5 s, ~100 MB
here) off the submit path and out of the CLI, and lets a machine without Ray
installed drive a remote cluster.
"""

from __future__ import annotations

import json
import os
import urllib.parse

from jupyter_compute.exceptions import TargetError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

#: Ray's job states, and the ones a job never leaves.
PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED = ("PENDING", "RUNNING", "STOPPED", "SUCCEEDED",
                                                "FAILED")
TERMINAL = frozenset({STOPPED, SUCCEEDED, FAILED})
DEFAULT_TIMEOUT = 10.0


class ClusterUnreachableError(TargetError):
    """The head's dashboard did not answer (down, wrong address, firewall)."""


class NotRayError(TargetError):
    """Something answered at the address, but it is not a Ray dashboard."""


class JobNotFoundError(TargetError):
    """The cluster does not know the job (it restarted, or the id is wrong)."""


class JobsClient:
    """The Ray head at ``address`` (``http://HOST:8265``), over its HTTP API.

    ``token`` is sent as ``Authorization: Bearer …`` for clusters started with
    Ray's token authentication (``RAY_AUTH_MODE=token``).

    >>> JobsClient("http://127.0.0.1:8265").version()["ray_version"]
    '2.60.0'
    """

    def __init__(self, address: str, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = normalize_address(address)
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._opener: Any = None

    # -- plumbing --------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json",
                timeout: float | None = None) -> tuple[int, bytes]:
        """``(status, body)`` of one request; a refused or timed-out connection raises
        ``ClusterUnreachableError`` (HTTP errors come back as a status)."""
        import urllib.error  # ~25 ms with http.client and ssl: only when a request is made
        import urllib.request

        if self._opener is None:
            # Never through an HTTP proxy: the head is on the cluster's own network.
            self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.address + path, data=body, method=method,
                                     headers=headers)
        try:
            with self._opener.open(req, timeout=timeout or self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClusterUnreachableError(
                f"cannot reach the Ray head at {self.address} ({reason}); check that it "
                "runs and that the address is its dashboard (usually port 8265)") from exc

    def _json(self, method: str, path: str, payload: Any = None,
              what: str = "request") -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        status, data = self.request(method, path, body)
        if status == 404 and path.startswith("/api/jobs/") and path != "/api/jobs/":
            raise JobNotFoundError(data.decode(errors="replace").strip() or "no such job")
        if status in (401, 403):
            raise TargetError(f"the Ray head at {self.address} refused the {what} "
                              f"(HTTP {status}): it uses token authentication; set the "
                              "target's token_env to the NAME of a variable holding the token")
        if status >= 400:
            raise TargetError(f"the Ray head at {self.address} refused the {what} (HTTP "
                              f"{status}): {_last_line(data)}")
        try:
            return json.loads(data) if data else None
        except ValueError:
            raise NotRayError(f"{self.address} answered the {what} with something that is "
                              "not JSON; is the address a Ray dashboard (http://HEAD:8265)?"
                              ) from None

    # -- the head --------------------------------------------------------------------

    def version(self) -> dict[str, Any]:
        """``{"version", "ray_version", "ray_commit", "session_name"}``; proves it is Ray."""
        status, data = self.request("GET", "/api/version")
        try:
            found = json.loads(data) if status == 200 else None
        except ValueError:
            found = None
        if not isinstance(found, dict) or "ray_version" not in found:
            raise NotRayError(f"{self.address} is not a Ray dashboard (GET /api/version "
                              f"answered HTTP {status}); the address must be the head's "
                              "dashboard, e.g. http://HEAD:8265")
        return found

    # -- jobs ------------------------------------------------------------------------

    def submit(self, entrypoint: str, *, submission_id: str,
               runtime_env: dict[str, Any] | None = None,
               metadata: dict[str, str] | None = None,
               entrypoint_num_cpus: float | None = None,
               entrypoint_memory: int | None = None,
               entrypoint_resources: dict[str, float] | None = None) -> str:
        """Submit a job (``POST /api/jobs/``); returns its submission id."""
        payload = {"entrypoint": entrypoint, "submission_id": submission_id,
                   "runtime_env": runtime_env or {}, "metadata": metadata or {},
                   "entrypoint_num_cpus": entrypoint_num_cpus,
                   "entrypoint_memory": entrypoint_memory,
                   "entrypoint_resources": entrypoint_resources}
        # Unset fields are left out, as the SDK does, so older heads accept the request.
        payload = {k: v for k, v in payload.items() if v is not None}
        found = self._json("POST", "/api/jobs/", payload, what="job submission")
        return str(found["submission_id"])

    def info(self, submission_id: str) -> dict[str, Any]:
        """The job's details: ``status``, ``message``, ``driver_exit_code``, …"""
        return self._json("GET", f"/api/jobs/{_q(submission_id)}",  # type: ignore[no-any-return]
                          what="job status request")

    def logs(self, submission_id: str) -> str:
        """The job driver's whole log so far (Ray keeps no offsets on its side)."""
        found = self._json("GET", f"/api/jobs/{_q(submission_id)}/logs", what="log request")
        return str(found.get("logs") or "")

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the job: SIGTERM to its process tree, SIGKILL after a grace."""
        try:
            found = self._json("POST", f"/api/jobs/{_q(submission_id)}/stop",
                               what="stop request")
        except JobNotFoundError:
            return False
        return bool(found and found.get("stopped"))

    # -- packages (a job's working_dir) ----------------------------------------------

    def package_exists(self, uri: str) -> bool:
        """Whether ``gcs://_ray_pkg_….zip`` is already stored in the cluster."""
        status, _ = self.request("GET", "/api/packages/" + _package_path(uri))
        return status == 200

    def upload_package(self, uri: str, data: bytes) -> None:
        """Store a zip in the cluster's GCS under ``uri``, for ``runtime_env.working_dir``."""
        status, body = self.request("PUT", "/api/packages/" + _package_path(uri), data,
                                    content_type="application/octet-stream",
                                    timeout=max(self.timeout, 300.0))
        if status >= 400:
            raise TargetError(f"uploading the run's files to the Ray head at {self.address} "
                              f"failed (HTTP {status}): {_last_line(body)}")

    # -- the cluster -----------------------------------------------------------------

    def cluster_status(self) -> dict[str, Any]:
        """The autoscaler's last report (``autoscalerReport``, ``loadMetricsReport``)."""
        found = self._json("GET", "/api/cluster_status", what="cluster status request")
        return dict((found or {}).get("data", {}).get("clusterStatus") or {})

    def nodes(self) -> list[dict[str, Any]]:
        """Alive nodes: ``node_id``, ``node_ip``, ``is_head_node``, ``resources_total``."""
        found = self._json("GET", "/api/v0/nodes?limit=10000&filter_keys=state"
                           "&filter_predicates=%3D&filter_values=ALIVE&detail=1",
                           what="node list request")
        return list((found or {}).get("data", {}).get("result", {}).get("result") or [])

    def events(self) -> list[dict[str, Any]]:
        """The cluster's recent events (the autoscaler's among them), oldest first."""
        found = self._json("GET", "/events", what="event request")
        groups = (found or {}).get("data", {}).get("events") or {}
        out = [e for events in groups.values() for e in events]
        out.sort(key=lambda e: float(e.get("timestamp") or 0))
        return out


def normalize_address(address: str) -> str:
    """``HEAD``, ``HEAD:8265`` or ``http://HEAD:8265/`` → ``http://HEAD:8265``.

    >>> normalize_address("10.0.0.5")
    'http://10.0.0.5:8265'
    """
    address = address.strip().rstrip("/")
    if address.startswith("ray://"):
        raise TargetError(f"{address} is a Ray Client address; give the head's dashboard "
                          "instead, e.g. http://HEAD:8265")
    if "://" not in address:
        address = "http://" + address
    parts = urllib.parse.urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(f"invalid Ray address {address!r}; give the head's dashboard, e.g. "
                          "http://HEAD:8265")
    if parts.port is None:
        address = f"{parts.scheme}://{parts.netloc}:8265{parts.path}"
    return address


def token_from_env(name: str | None) -> str | None:
    """The token in environment variable ``name`` (or ``RAY_AUTH_TOKEN`` when unset)."""
    if name:
        value = os.environ.get(name)
        if not value:
            raise TargetError(f"environment variable {name} (the target's token_env) is not "
                              "set; export it with the cluster's token")
        return value.strip()
    value = os.environ.get("RAY_AUTH_TOKEN")
    return value.strip() if value else None


def _q(submission_id: str) -> str:
    return urllib.parse.quote(submission_id, safe="")


def _package_path(uri: str) -> str:
    protocol, _, name = uri.partition("://")
    return f"{protocol}/{urllib.parse.quote(name, safe='')}"


def _last_line(data: bytes) -> str:
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1][:300] if lines else "no details"


def node_counts(cluster_status: dict[str, Any],
                nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Worker node counts from Ray's cluster status (or, without an autoscaler, its nodes).

    ``current``: worker nodes up; ``pending``: being launched; ``idle``: up with no CPU
    in use. The head is never counted.

    >>> node_counts({"autoscalerReport": {"activeNodes": {"ray.head.default": 1, "cpu": 2},
    ...              "pendingLaunches": {"cpu": 1}, "pendingNodes": []}})["current"]
    2
    """
    report = cluster_status.get("autoscalerReport") or {}
    load = cluster_status.get("loadMetricsReport") or {}
    if report:
        active = report.get("activeNodes") or {}
        current = max(0, sum(int(v) for v in active.values()) - 1)  # less the head
        pending = sum(int(v) for v in (report.get("pendingLaunches") or {}).values()) + \
            len(report.get("pendingNodes") or [])
        idle = 0
        for usage in (load.get("usageByNode") or {}).values():
            if "node:InternalHead" in usage or "node:__internal_head__" in usage:
                continue
            used = (usage.get("CPU") or [0.0, 0.0])[0]
            idle += 1 if not used else 0
        return {"current": current, "pending": pending, "idle": min(idle, current)}
    workers = [n for n in (nodes or []) if not n.get("is_head_node")]
    return {"current": len(workers), "pending": 0, "idle": None}
