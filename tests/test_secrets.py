"""Secret environment values never rest in plain text (issue 20, defect 8): not in the
store, not in a run folder; they show as *** and still reach the script."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
from pathlib import Path

from jupyter_compute import RunSpec, RunStatus, protocol, submit

from conftest import Project

# The script proves it saw the values without printing them.
DIGEST = """
import hashlib, os
for name in {names!r}:
    print(name, hashlib.sha256(os.environ.get(name, "<unset>").encode()).hexdigest())
print("EPOCHS", os.environ.get("EPOCHS"))
"""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def found_anywhere(root: Path, *values: str) -> list[str]:
    """Files under ``root`` that hold any of ``values`` (as ``grep -r`` would tell)."""
    hits = []
    for value in values:
        out = subprocess.run(["grep", "-r", "-l", "-a", value, str(root)],
                             capture_output=True, text=True)
        assert out.returncode in (0, 1), out.stderr
        hits += out.stdout.split()
    return hits


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secret_values_reach_the_script_and_nowhere_else(project: Project) -> None:
    secrets = {"API_TOKEN": "abc123", "DB_PASSWORD": "hunter2"}
    project.write("show.py", DIGEST.format(names=sorted(secrets)))
    run = submit("show.py", source_dir=project.root,
                 environment_variables={**secrets, "EPOCHS": "3"})
    assert run.wait(timeout=60) is RunStatus.COMPLETED, run.log()
    log = run.log()
    for name, value in secrets.items():
        assert f"{name} {digest(value)}" in log  # the script saw the real value
    assert "EPOCHS 3" in log

    workspace = project.root / ".jupyter_compute"
    assert (workspace / "runs.db").exists()
    assert found_anywhere(workspace, *secrets.values()) == []  # runs.db, -wal, run folder

    run_dir = project.run_dir(run.id)
    assert not (run_dir / protocol.SECRETS).exists()
    assert mode(run_dir) == 0o700
    for name in (protocol.SPEC, protocol.STATUS):
        assert mode(run_dir / name) == 0o600, name
    spec = json.loads((run_dir / protocol.SPEC).read_text())
    assert spec["environment_variables"] == {"API_TOKEN": "***", "DB_PASSWORD": "***",
                                             "EPOCHS": "3"}

    shown = project.show(run.id)
    assert shown["environment_variables"] == spec["environment_variables"]
    listed = json.loads(project.cli("runs", "--json").stdout)
    assert listed[0]["environment_variables"]["API_TOKEN"] == "***"


def test_submit_names_more_secrets(project: Project) -> None:
    project.write("show.py", DIGEST.format(names=["PLAIN_NAME"]))
    run = submit("show.py", source_dir=project.root, secret_env=["PLAIN_NAME"],
                 environment_variables={"PLAIN_NAME": "opaque-42", "EPOCHS": "3"})
    assert run.wait(timeout=60) is RunStatus.COMPLETED, run.log()
    assert f"PLAIN_NAME {digest('opaque-42')}" in run.log()
    assert run.to_dict()["environment_variables"] == {"PLAIN_NAME": "***", "EPOCHS": "3"}
    assert found_anywhere(project.root / ".jupyter_compute", "opaque-42") == []


def test_secret_env_in_run_yml_through_the_cli(project: Project) -> None:
    # Outside the source folder: a run.yml inside it would travel in the snapshot.
    config = project.root.parent / "run.yml"
    config.write_text("script: show.py\n"
                      "environment_variables: {MY_CREDENTIAL: s3cr3t-value, EPOCHS: 3}\n"
                      "secret_env: [MY_CREDENTIAL]\n")
    project.write("show.py", DIGEST.format(names=["MY_CREDENTIAL"]))
    out = project.cli("submit", "--config", str(config), "--wait")
    assert out.returncode == 0, out.stderr
    assert f"MY_CREDENTIAL {digest('s3cr3t-value')}" in out.stdout
    run_id = out.stderr.split()[1]
    assert project.show(run_id)["environment_variables"] == {"MY_CREDENTIAL": "***",
                                                             "EPOCHS": "3"}
    assert found_anywhere(project.root / ".jupyter_compute", "s3cr3t-value") == []


def test_a_spec_shows_secret_values_masked() -> None:
    spec = RunSpec("train.py", Path("."), secret_env=["OTHER"],
                   environment_variables={"AWS_SECRET_ACCESS_KEY": "wJalrX", "OTHER": "x1y2",
                                          "EPOCHS": "3"})
    text = repr(spec)
    assert "wJalrX" not in text and "x1y2" not in text
    assert "'AWS_SECRET_ACCESS_KEY': '***'" in text and "'EPOCHS': '3'" in text


def test_names_that_look_secret() -> None:
    secret = ["API_TOKEN", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "github_token", "SSH_KEY",
              "HF_TOKEN", "OPENAI_APIKEY", "apiKey", "MYSQL_ROOT_PASSWORD", "CLIENT_SECRET",
              "GPG_PASSPHRASE"]
    plain = ["EPOCHS", "PATH", "MONKEY", "KEYBOARD_LAYOUT", "TOKENIZERS_PARALLELISM", "HOME"]
    assert [n for n in secret if not protocol.is_secret_name(n)] == []
    assert [n for n in plain if protocol.is_secret_name(n)] == []
