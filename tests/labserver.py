"""A private JupyterLab server for browser tests: loopback, a token, temp folders."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JupyterLab:
    """``JupyterLab(root).start()``; ``url(path)`` opens a notebook with the token."""

    def __init__(self, root: Path, state: Path) -> None:
        self.root, self.state = root, state
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> JupyterLab:
        settings = self.state / "settings"
        notify = settings / "@jupyterlab" / "apputils-extension"
        notify.mkdir(parents=True, exist_ok=True)
        # The news pop-up would cover the notebook in screenshots.
        (notify / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        log = open(self.state / "jupyterlab.log", "wb")  # noqa: SIM115 - lives with the server
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("jupyter-lab")), "--no-browser", "--allow-root",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
             f"--LabApp.user_settings_dir={settings}",
             f"--LabApp.workspaces_dir={self.state / 'workspaces'}",
             "--LabApp.news_url=None", "--ServerApp.open_browser=False"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
            env={**os.environ, "JUPYTER_CONFIG_DIR": str(self.state / "config")})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.base}/api/status?token={self.token}", timeout=2)
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError("JupyterLab did not start: "
                           + (self.state / "jupyterlab.log").read_text()[-2000:])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}/lab/tree/{path}?reset&token={self.token}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


CHROMIUM_ARGS = ["--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def launch_chromium(playwright: Any) -> Any:
    """Debian's Chromium under Playwright: never a downloaded browser."""
    import shutil

    return playwright.chromium.launch(
        executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=CHROMIUM_ARGS)


def run_all_cells(page: Any, lab: JupyterLab, notebook: str, timeout: int = 60_000) -> None:
    """Open ``notebook`` in JupyterLab, wait for its kernel, and Run All Cells."""
    page.goto(lab.url(notebook))
    page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=timeout)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout)
    # The kernel must be connected before anything runs.
    page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=timeout)
    page.get_by_role("menuitem", name="Run").click()
    page.get_by_text("Run All Cells", exact=True).click()


def set_theme(page: Any, theme: str, timeout: int = 30_000) -> None:
    """Switch JupyterLab to its "light" or "dark" theme through the Settings menu.

    The choice is a user setting, so it outlives the page: a test that screenshots a
    theme sets it first instead of trusting what an earlier test left behind."""
    import time

    light = "true" if theme == "light" else "false"
    if page.locator(f'body[data-jp-theme-light="{light}"]').count():
        return
    page.get_by_role("menuitem", name="Settings").click()
    page.locator(".lm-Menu-item", has_text="Theme").first.hover()
    page.get_by_text(f"JupyterLab {theme.capitalize()}", exact=True).click()
    page.wait_for_selector(f'body[data-jp-theme-light="{light}"]', state="attached",
                           timeout=timeout)
    time.sleep(1)  # the theme's stylesheet settles after the attribute flips
