"""The one lost-run rule (``targets.liveness.lost``): pure, so every case is a plain dict.

The end-to-end cases (an upload over a slow link outliving START_TIMEOUT, a killed
agent, a killed submitting client) are in test_ssh.py and test_runs.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from jupyter_compute import protocol
from jupyter_compute.targets.liveness import ClientBeat, client_state, lost

NOW = 1_000_000.0
ME = protocol.process_identity(os.getpid())


def iso(ts: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat()


def test_a_running_agent_that_lives_is_not_lost() -> None:
    st = {"status": "Running", "agent": ME}
    assert lost(st, agent_alive=True, heartbeat_age=None, client=None, now=NOW) is None


def test_a_dead_agent_is_lost_and_named() -> None:
    st = {"status": "Running", "agent": {"pid": 4242}}
    why = lost(st, agent_alive=False, heartbeat_age=1.0, client=None, now=NOW)
    assert why is not None and why.startswith("agent lost") and "4242" in why


def test_without_a_pid_check_the_heartbeat_decides() -> None:
    st = {"status": "Running", "agent": {"pid": 1}}
    assert lost(st, agent_alive=None, heartbeat_age=3.0, client=None, now=NOW) is None
    stale = protocol.HEARTBEAT_TIMEOUT + 1
    assert "heartbeat" in (lost(st, agent_alive=None, heartbeat_age=stale, client=None,
                                now=NOW) or "")


def test_an_upload_longer_than_start_timeout_is_kept_alive_by_its_client() -> None:
    # The defect: a run still uploading after 60 s was declared "agent lost".
    st = {"status": "Queued", "created": iso(NOW - 10 * protocol.START_TIMEOUT)}
    client = {"identity": ME, "launched": None, "age": 500.0, "alive": True}
    assert lost(st, agent_alive=None, heartbeat_age=None, client=client, now=NOW) is None


def test_a_client_that_died_before_launching_makes_the_run_client_lost() -> None:
    st = {"status": "Queued", "created": iso(NOW - 5)}
    # Its pid is known dead: no need to wait for a beat to go stale.
    client = {"identity": {"pid": 77}, "launched": None, "age": 1.0, "alive": False}
    why = lost(st, agent_alive=None, heartbeat_age=None, client=client, now=NOW)
    assert why is not None and why.startswith("client lost") and "77" in why
    # Where its pid cannot be checked (another OS), its beat decides.
    client.update(alive=None)
    assert lost(st, agent_alive=None, heartbeat_age=None, client=client, now=NOW) is None
    client.update(age=protocol.HEARTBEAT_TIMEOUT + 1)
    assert (lost(st, agent_alive=None, heartbeat_age=None, client=client, now=NOW) or ""
            ).startswith("client lost")


def test_after_launch_the_agent_must_show_up_within_start_timeout() -> None:
    st = {"status": "Queued", "created": iso(NOW - 1000)}
    client = {"identity": ME, "launched": NOW - 5, "age": 5.0, "alive": False}
    assert lost(st, agent_alive=None, heartbeat_age=None, client=client, now=NOW) is None
    client["launched"] = NOW - protocol.START_TIMEOUT - 1
    assert "did not start" in (lost(st, agent_alive=None, heartbeat_age=None, client=client,
                                    now=NOW) or "")


def test_a_launcher_that_saw_its_container_end_before_the_agent_started() -> None:
    st = {"status": "Queued", "created": iso(NOW - 1)}
    assert lost(st, agent_alive=False, heartbeat_age=None, client=None,
                now=NOW) is not None


def test_client_beat_records_this_process_and_the_launch(tmp_path) -> None:
    with ClientBeat(tmp_path) as beat:
        state = client_state(tmp_path)
        assert state is not None and state["alive"] is True and state["launched"] is None
        beat.launched()
    state = client_state(tmp_path)
    assert state is not None and abs(state["launched"] - time.time()) < 5


def test_a_killed_client_is_seen_dead_by_its_pid(tmp_path) -> None:
    code = ("import sys; sys.path[:0] = sys.argv[1:2]\n"
            "from jupyter_compute.targets.liveness import ClientBeat\n"
            "b = ClientBeat(sys.argv[2]); b.__enter__(); print('ok', flush=True)\n"
            "import time; time.sleep(60)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.Popen([sys.executable, "-c", code, root, str(tmp_path)],
                             stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"ok"
    assert (client_state(tmp_path) or {}).get("alive") is True
    child.kill()
    child.wait()
    state = client_state(tmp_path)
    assert state is not None and state["alive"] is False
