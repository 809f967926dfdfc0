"""A real IPython kernel for tests, driven with jupyter_client."""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import start_new_kernel


@dataclass
class Result:
    status: str
    stdout: str = ""
    stderr: str = ""
    error: list[str] = field(default_factory=list)   # the traceback lines shown
    data: list[dict[str, Any]] = field(default_factory=list)  # display_data / results
    seconds: float = 0.0

    @property
    def error_text(self) -> str:
        import re

        return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(self.error))


class Kernel:
    """One kernel with its cwd in a project folder: ``k.run("1+1").data``."""

    def __init__(self, cwd: Path) -> None:
        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd))

    def run(self, code: str, timeout: float = 120, interrupt_after: float | None = None
            ) -> Result:
        t0 = time.monotonic()
        msg_id = self.kc.execute(code)
        result = Result(status="?")
        interrupted = False
        while True:
            if interrupt_after is not None and not interrupted and \
                    time.monotonic() - t0 > interrupt_after:
                self.km.interrupt_kernel()
                interrupted = True
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"cell did not finish in {timeout}s: {code[:60]}") \
                        from None
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                if content["name"] == "stdout":
                    result.stdout += content["text"]
                else:
                    result.stderr += content["text"]
            elif kind in ("display_data", "execute_result", "update_display_data"):
                result.data.append(content["data"])
            elif kind == "error":
                result.error = content["traceback"]
            elif kind == "status" and content["execution_state"] == "idle":
                break
        # The reply to this cell: start-up may leave an extra kernel_info_reply queued
        # (wait_for_ready asks until one answers), which would shift every reply by one.
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        result.status = reply["content"]["status"]
        result.seconds = time.monotonic() - t0
        return result

    def value(self, expr: str, timeout: float = 60) -> str:
        out = self.run(f"print({expr})", timeout=timeout)
        assert out.status == "ok", out.error_text
        return out.stdout.strip()

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
