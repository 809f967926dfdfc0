"""The Compute sidebar's server extension: real Jupyter server (pytest-jupyter), real
workspace, real runs on the local target.

pytest-jupyter's fixtures are imported into this module only (not registered as a
plugin): its autouse event-loop fixtures would otherwise reach the Playwright tests.
The tests are plain functions that drive ``jp_fetch`` on that loop.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Callable

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403 - fixtures, for this module only
from tornado.httpclient import HTTPClientError, HTTPResponse

from jupyter_compute import api
from jupyter_compute.runs import Run

from conftest import pid_alive

Fetch = Callable[..., Any]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_compute.server": True}}}


@pytest.fixture
def root(jp_root_dir: Path) -> Path:
    (jp_root_dir / ".jupyter_compute").mkdir(parents=True, exist_ok=True)
    return jp_root_dir


@pytest.fixture
def call(jp_fetch: Callable[..., Coroutine[Any, Any, HTTPResponse]],
         jp_asyncio_loop: Any) -> Fetch:
    """``call("runs", params=…)`` → ``(status, json)``; errors too, never raised."""

    def fetch(*path: str, method: str = "GET", body: Any = None, **kw: Any) -> tuple[int, Any]:
        if body is not None:
            kw["body"] = json.dumps(body)
        elif method in ("POST", "PUT"):
            kw["body"] = b""
        try:
            resp = jp_asyncio_loop.run_until_complete(
                jp_fetch("jupyter-compute", "api", *path, method=method, **kw))
        except HTTPClientError as exc:
            assert exc.response is not None
            resp = exc.response
        text = resp.body.decode() if resp.body else ""
        return resp.code, json.loads(text) if text else None

    return fetch


def submit(root: Path, name: str, source: str) -> str:
    script = root / f"{name}.py"
    script.write_text(textwrap.dedent(source))
    return api.submit(script, target="local", name=name, source_dir=root, workspace=root).id


def wait_for(predicate: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_targets_list_the_workspace_and_local(call: Fetch, root: Path) -> None:
    status, body = call("targets")
    assert status == 200
    assert body["workspace"] == str(root)
    local = body["targets"][0]
    assert (local["name"], local["kind"], local["status"]) == ("local", "local", "ready")
    assert local["cluster"] is False and local["nodes"] is None


def test_attach_validates_like_the_cli_and_leaves_nothing_half_made(call: Fetch,
                                                                     root: Path) -> None:
    targets_file = root / ".jupyter_compute" / "targets.yml"
    for body, expected in [
        ({}, "name and kind are required"),
        ({"name": "box"}, "kind is required"),
        ({"name": "bad name!", "kind": "local"}, "invalid target name"),
        ({"name": "box", "kind": "lokal"}, "did you mean 'local'"),
        ({"name": "box", "kind": "local", "options": {"nope": "1"}}, "nope"),
        ({"name": "box", "kind": "ssh", "options": {"port": "twenty-two", "host": "h"}},
         "port must be a int"),
    ]:
        status, err = call("targets", method="POST", body=body)
        assert status == 400, (body, err)
        assert err["error"] == "UsageError"
        assert expected in err["message"], err
        assert not targets_file.exists(), "a refused attach wrote targets.yml"

    status, made = call("targets", method="POST",
                        body={"name": "box", "kind": "local",
                              "options": {"python": sys.executable}})
    assert status == 201, made
    assert made["name"] == "box" and made["options"] == {"python": sys.executable}
    assert "box" in api.targets(root)

    status, err = call("targets", method="POST", body={"name": "box", "kind": "local"})
    assert status == 409 and "already attached" in err["message"]
    status, _ = call("targets", method="POST",
                     body={"name": "box", "kind": "local", "replace": True})
    assert status == 201

    assert call("targets", "box", method="DELETE")[0] == 204
    assert "box" not in api.targets(root)
    status, err = call("targets", "box", method="DELETE")
    assert status == 404 and "no target named 'box'" in err["message"]
    status, err = call("targets", "nowhere", "start", method="POST")
    assert status == 404
    status, err = call("targets", "local", "start", method="POST")
    assert status == 400 and "nothing to start" in err["message"]


def test_runs_newest_first_and_the_log_tails_by_offset(call: Fetch, root: Path) -> None:
    first = submit(root, "quick", "print('quick done')\n")
    api.runs(workspace=root)[0].wait(timeout=60)
    second = submit(root, "slow", """\
        import time
        from jupyter_compute.tracking import get_run
        run = get_run()
        for i in range(8):
            print(f'slow line {i}', flush=True)
            run.log('loss', 1 / (i + 1), step=i)
            time.sleep(0.25)
        """)

    status, body = call("runs")
    assert status == 200
    assert [r["id"] for r in body["runs"]][:2] == [second, first]
    assert call("runs", params={"limit": "1"})[1]["runs"][0]["id"] == second
    done = call("runs", params={"status": "Completed"})[1]["runs"]
    assert [r["id"] for r in done] == [first]

    # Tail the log the way the log tab does: whole lines, by offset, until done.
    offset, text, chunks, seen_running = 0, "", 0, False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, chunk = call("runs", second, "log", params={"offset": str(offset)})
        assert status == 200 and chunk["offset"] == offset
        assert chunk["text"] == "" or chunk["text"].endswith("\n") or chunk["done"]
        seen_running |= chunk["status"] == "Running" and bool(chunk["text"])
        text += chunk["text"]
        chunks += bool(chunk["text"])
        offset = chunk["next_offset"]
        if chunk["done"]:
            break
        time.sleep(0.2)
    assert chunk["done"] and chunk["status"] == "Completed"
    assert seen_running, "no log line arrived while the run was Running"
    assert chunks > 1, "the log came in one piece: nothing was tailed"
    assert [f"slow line {i}" for i in range(8)] == [
        line for line in text.splitlines() if line.startswith("slow line")]
    assert text.encode() == api.runs(workspace=root)[0].read_log()
    status, rest = call("runs", second, "log", params={"offset": str(offset)})
    assert (rest["text"], rest["next_offset"], rest["done"]) == ("", offset, True)

    status, run = call("runs", second)
    assert run["status"] == "Completed" and run["metric"]["name"] == "loss"
    assert run["metric"]["value"] == pytest.approx(1 / 8)
    status, metrics = call("runs", second, "metrics")
    assert [r["step"] for r in metrics["metrics"]["loss"]] == list(range(8))
    status, part = call("runs", second, "metrics", params={"offset": "0"})
    assert len(part["records"]) == 8 and part["next_offset"] > 0
    status, err = call("runs", second, "notebook")
    assert status == 400 and "only notebook runs" in err["message"]


def test_a_listed_child_brings_its_parent_along(call: Fetch, root: Path) -> None:
    """A sweep older than the newest runs listed still heads its trials."""
    (root / "quick.py").write_text("print('x')\n")
    parent = api.submit(root / "quick.py", target="local", name="parent", source_dir=root,
                        workspace=root)
    children = [api.submit(root / "quick.py", target="local", name=f"child{i}",
                           source_dir=root, workspace=root, parent_id=parent.id)
                for i in range(3)]
    for run in (parent, *children):
        run.wait(timeout=60)
    rows = call("runs", params={"limit": "2"})[1]["runs"]
    assert [r["id"] for r in rows] == [parent.id, children[2].id, children[1].id]
    assert rows[1]["parent_id"] == parent.id
    rows = call("runs", params={"limit": "10"})[1]["runs"]
    assert [r["id"] for r in rows] == [c.id for c in reversed(children)] + [parent.id]


def test_cancel_from_the_api_leaves_no_process(call: Fetch, root: Path) -> None:
    run_id = submit(root, "forever", """\
        import os, time
        print(f'pid {os.getpid()}', flush=True)
        time.sleep(600)
        """)

    def pid() -> int | None:
        log = call("runs", run_id, "log")[1]["text"]
        return int(log.split()[1]) if log.startswith("pid ") else None

    try:
        script_pid = wait_for(pid)
        wait_for(lambda: call("runs", run_id)[1]["status"] == "Running")
        status, body = call("runs", run_id, "cancel", method="POST")
    finally:
        Run.get(run_id, root).cancel()  # never leave the sleeper behind, whatever failed
    assert status == 200 and body["status"] == "Canceled"
    wait_for(lambda: not pid_alive(script_pid), timeout=10)
    assert call("runs", params={"status": "Canceled"})[1]["runs"][0]["id"] == run_id


def test_bad_input_gets_json_errors(call: Fetch, root: Path) -> None:
    run_id = submit(root, "tiny", "print('x')\n")
    cases = [
        (("runs", run_id, "log"), {"offset": "-1"}, 400, "offset must be at least 0"),
        (("runs", run_id, "log"), {"offset": "ten"}, 400, "whole number"),
        (("runs", "no-such-run"), {}, 404, "no run 'no-such-run'"),
        (("runs", "no-such-run", "log"), {}, 404, "no run"),
        (("runs",), {"limit": "0"}, 400, "limit must be at least 1"),
        (("runs",), {"status": "Finished"}, 400, "unknown status 'Finished'"),
        (("targets", "nowhere"), {}, 404, "no target named 'nowhere'"),
    ]
    for path, params, code, text in cases:
        status, err = call(*path, params=params)
        assert status == code, (path, params, err)
        assert set(err) == {"error", "message"} and text in err["message"], err
    status, err = call("runs", "no-such-run", "cancel", method="POST")
    assert status == 404 and err["error"] == "RunNotFoundError"
    status, err = call("targets", method="POST", body=None, headers={"Content-Type": "x"})
    assert status == 400


def test_unauthenticated_requests_are_refused(call: Fetch, root: Path) -> None:
    for path, method in [(("targets",), "GET"), (("runs",), "GET"),
                         (("runs", "x", "detail"), "GET"),
                         (("runs", "x", "outputs", "file"), "GET"),
                         (("targets",), "POST"), (("runs", "x", "cancel"), "POST")]:
        status, err = call(*path, method=method, headers={"Authorization": ""})
        assert status == 403, (path, err)
        assert "error" in err and "message" in err
    assert not (root / ".jupyter_compute" / "targets.yml").exists()


def test_no_workspace_folder_is_made_by_looking(call: Fetch, jp_root_dir: Path) -> None:
    status, body = call("runs")
    assert status == 200 and body["runs"] == []
    assert call("runs", "abc")[0] == 404
    assert not (jp_root_dir / ".jupyter_compute").exists()


def test_executed_notebook_of_a_notebook_run(call: Fetch, root: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('from the executed notebook')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "explore.ipynb")
    run = api.submit(root / "explore.ipynb", target="local", source_dir=root, workspace=root,
                     parameters={"alpha": 0.5})
    assert run.wait(timeout=120).value == "Completed", run.log()
    assert call("runs", run.id, "detail")[1]["params"] == {"alpha": 0.5}
    status, view = call("runs", run.id, "notebook", params={"theme": "dark"})
    assert status == 200, view
    assert view["name"] == "explore.ipynb" and view["status"] == "Completed"
    assert "from the executed notebook" in view["html"]


RUN_PAGE_SCRIPT = """\
    import json, os
    from jupyter_compute.tracking import get_run
    run = get_run()
    run.tag('model', 'logistic-regression')
    for step in range(1, 4):
        run.log('loss', 1 / step, step=step)
    out = run.outputs_dir
    os.makedirs(os.path.join(out, 'sub'), exist_ok=True)
    with open(os.path.join(out, 'model.json'), 'w') as f:
        json.dump({'w': [1, 2]}, f)
    with open(os.path.join(out, 'sub', 'notes é.txt'), 'w') as f:
        f.write('notes\\n')
    with open(os.path.join(out, 'blob.bin'), 'wb') as f:
        f.write(bytes(range(256)) * 4096 * 3)  # 3 MiB: more than one streamed chunk
    # A link to a file outside outputs/ (the run's own status.json) and one inside.
    os.symlink(os.path.abspath(os.path.join(out, '..', 'status.json')),
               os.path.join(out, 'escape.json'))
    os.symlink('model.json', os.path.join(out, 'alias.json'))
    os.symlink('/etc', os.path.join(out, 'etc'))  # a folder outside
    print('done', flush=True)
    """


def test_run_page_detail_lists_params_tags_git_snapshot_and_outputs(call: Fetch,
                                                                     root: Path) -> None:
    import subprocess

    (root / "README.md").write_text("hello\n")
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first"]):
        subprocess.run(["git", *cmd], cwd=root, check=True)
    (root / "page.py").write_text(textwrap.dedent(RUN_PAGE_SCRIPT))
    run = api.submit(root / "page.py", target="local", name="page", source_dir=root,
                     workspace=root, arguments=["--lr", "0.5"])
    assert run.wait(timeout=60).value == "Completed", run.log()

    status, page = call("runs", run.id, "detail")
    assert status == 200, page
    assert page["status"] == "Completed" and page["arguments"] == ["--lr", "0.5"]
    assert page["tags"] == {"model": "logistic-regression"}
    assert page["params"] == {} and page["parent"] is None
    assert page["git"]["branch"] == "main" and len(page["git"]["commit"]) == 40
    assert page["git"]["dirty"] is True  # page.py is not committed
    status, snap = call("runs", run.id, "snapshot")
    files = {f["path"]: f["size"] for f in snap["files"]}
    assert files == {"page.py": (root / "page.py").stat().st_size, "README.md": 6}
    assert snap["total"] == 2 == page["snapshot"]["files"]
    outs = {o["path"]: o["size"] for o in page["outputs"]}
    assert outs == {"model.json": 13, "alias.json": 13, "sub/notes é.txt": 6,
                    "blob.bin": 3 * 1024 * 1024}, "the escaping link must not be listed"
    assert call("runs", run.id, "outputs")[1]["outputs"] == page["outputs"]
    assert call("runs", run.id, "detail", params={"outputs": "0"})[1]["outputs"] is None
    # The list rows carry the tags too (the sidebar filters by them).
    row = next(r for r in call("runs")[1]["runs"] if r["id"] == run.id)
    assert row["tags"] == {"model": "logistic-regression"}


def test_output_download_streams_the_file_and_never_leaves_outputs(
        jp_fetch: Callable[..., Coroutine[Any, Any, HTTPResponse]], jp_asyncio_loop: Any,
        call: Fetch, root: Path) -> None:
    (root / "page.py").write_text(textwrap.dedent(RUN_PAGE_SCRIPT))
    run = api.submit(root / "page.py", target="local", name="page", source_dir=root,
                     workspace=root)
    assert run.wait(timeout=60).value == "Completed", run.log()

    def fetch(rel: str, **kw: Any) -> HTTPResponse:
        try:
            return jp_asyncio_loop.run_until_complete(jp_fetch(
                "jupyter-compute", "api", "runs", run.id, "outputs", "file",
                params={"path": rel}, **kw))
        except HTTPClientError as exc:
            assert exc.response is not None
            return exc.response

    outputs = run.target.outputs_dir(run.id)
    resp = fetch("blob.bin")
    assert resp.code == 200 and resp.body == (outputs / "blob.bin").read_bytes()
    assert resp.headers["Content-Disposition"] == 'attachment; filename="blob.bin"; ' \
        "filename*=UTF-8''blob.bin"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    resp = fetch("sub/notes é.txt")
    assert resp.code == 200 and resp.body == b"notes\n"
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert "filename*=UTF-8''notes%20%C3%A9.txt" in resp.headers["Content-Disposition"]
    assert fetch("alias.json").body == (outputs / "model.json").read_bytes()

    secret = run.workspace.run_dir(run.id) / "status.json"
    for rel, code in [("../status.json", 403), ("sub/../../status.json", 403),
                      ("sub/../model.json", 403), (str(secret), 403), ("escape.json", 403),
                      ("..", 403), ("sub\\..\\..\\status.json", 403),
                      ("etc/hostname", 403),
                      ("missing.txt", 404), ("sub", 404), ("", 404)]:
        resp = fetch(rel)
        assert resp.code == code, (rel, resp.code, resp.body[:200])
        err = json.loads(resp.body)
        assert set(err) == {"error", "message"} and b'"status"' not in resp.body, err
    resp = fetch("model.json", headers={"Authorization": ""})
    assert resp.code == 403, "an unauthenticated download was served"
    status, err = call("runs", "no-such-run", "outputs", "file", params={"path": "x"})
    assert status == 404


def test_an_output_notebook_renders_read_only(call: Fetch, root: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 + 1", outputs=[nbformat.v4.new_output(
        "execute_result", {"text/plain": "'rendered output cell'"}, execution_count=1)])]
    (root / "nbout.py").write_text(textwrap.dedent(f"""\
        import os
        from jupyter_compute.tracking import get_run
        with open(os.path.join(get_run().outputs_dir, 'report.ipynb'), 'w') as f:
            f.write({nbformat.writes(nb)!r})
        with open(os.path.join(get_run().outputs_dir, 'plain.txt'), 'w') as f:
            f.write('not a notebook')
        """))
    run = api.submit(root / "nbout.py", target="local", source_dir=root, workspace=root)
    assert run.wait(timeout=60).value == "Completed", run.log()
    status, view = call("runs", run.id, "outputs", "notebook",
                        params={"path": "report.ipynb", "theme": "dark"})
    assert status == 200 and "rendered output cell" in view["html"], view
    status, err = call("runs", run.id, "outputs", "notebook", params={"path": "plain.txt"})
    assert status == 400 and "not a notebook" in err["message"]
    status, err = call("runs", run.id, "outputs", "notebook", params={"path": "../spec.json"})
    assert status == 403
