"""Hostile or broken input stays contained: crafted manifests, looping links, poisoned
workspace files, bad config files, racing attaches and absurd query values (issue 20,
defects 5, 6, 9, 11, 12 and 13).

Each test drives the real thing: the agent as a target runs it, the CLI as a person
types it, the server extension through HTTP.

pytest-jupyter's fixtures are imported into this module only, as in test_server.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Callable

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403 - fixtures, for this module only
from tornado.httpclient import HTTPClientError, HTTPResponse

from jupyter_compute import api


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def _submitted(out: subprocess.CompletedProcess[str]) -> str:
    """The run id of ``submit --wait``, from its "submitted RUN to TARGET" line."""
    match = re.search(r"^submitted (\S+) to ", out.stderr, re.MULTILINE)
    assert match, out.stderr
    return match.group(1)


# -- defect 13: absurd offsets are a 400, not a 500 ----------------------------------------


Fetch = Callable[..., Any]


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"jupyter_compute.server": True}}}


@pytest.fixture
def call(jp_fetch: Callable[..., Coroutine[Any, Any, HTTPResponse]],
         jp_asyncio_loop: Any) -> Fetch:
    def fetch(*path: str, **kw: Any) -> tuple[int, Any]:
        try:
            resp = jp_asyncio_loop.run_until_complete(
                jp_fetch("jupyter-compute", "api", *path, **kw))
        except HTTPClientError as exc:
            assert exc.response is not None
            resp = exc.response
        return resp.code, json.loads(resp.body.decode())

    return fetch


OFFSETS = [
    ("99999999999999999999", "at most 9223372036854775807"),
    ("-99999999999999999999", "at least 0"),
    ("-1", "at least 0"),
    ("1e3", "whole number"),
    ("0x10", "whole number"),
    ("1_000", "whole number"),
    ("9" * 5000, "whole number"),
]


def test_out_of_range_offsets_are_a_400_with_json(call: Fetch, jp_root_dir: Path) -> None:
    (jp_root_dir / "t.py").write_text("print('x')\n")
    run = api.submit(jp_root_dir / "t.py", target="local", source_dir=jp_root_dir,
                     workspace=jp_root_dir, wait=True)
    for what in ("log", "metrics"):
        for offset, text in OFFSETS:
            status, body = call("runs", run.id, what, params={"offset": offset})
            assert status == 400, (what, offset[:30], body)
            assert set(body) == {"error", "message"} and text in body["message"], body
            assert len(body["message"]) < 200
        status, body = call("runs", run.id, what, params={"offset": "3"})
        assert status == 200 and body["offset"] == 3
