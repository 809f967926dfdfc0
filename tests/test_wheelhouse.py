"""The client's side of environments (``wheelhouse``): the ``kernel`` source, what a host
is, and wheels downloaded for a host with no index — with real pip, uv and venvs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from kernelvenv import LOCAL_VERSION, kernel_cli, make_kernel_venv

from jupyter_compute import wheelhouse
from jupyter_compute.blobstore import BlobStore
from jupyter_compute.targets.local import LocalHost
from jupyter_compute.wheelhouse import HostFacts
from jupyter_compute.workspace import Workspace


@pytest.fixture(scope="module")
def kernel_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_kernel_venv(tmp_path_factory.mktemp("kernel"))


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    (tmp_path / ".jupyter_compute").mkdir()
    return Workspace(tmp_path)


def test_kernel_pins_what_is_installed_and_builds_the_local_package(
        ws: Workspace, kernel_python: Path) -> None:
    env = wheelhouse.kernel_environment(ws, python=str(kernel_python))
    names = {line.split("==")[0].lower() for line in env["requirements"]}
    assert {"paramiko", "pyyaml", "pathspec", "six", "jc-local-lib"} <= names
    assert not names & {"pip", "setuptools", "wheel", "jupyter-compute"}  # never pinned
    assert "six==1.17.0" in env["requirements"]
    assert f"jc-local-lib=={LOCAL_VERSION}" in env["requirements"]
    assert env["python"] == "3.11" or env["python"].count(".") == 1
    # The editable package travels as a wheel, in the blob store under its sha256.
    (name, digest), = env["wheels"].items()
    assert name.startswith(f"jc_local_lib-{LOCAL_VERSION}-") and name.endswith(".whl")
    blob = BlobStore(ws.blobs_dir).path(digest)
    with zipfile.ZipFile(blob) as wheel:
        assert "jc_local_lib/__init__.py" in wheel.namelist()
    assert env["no_index"] is False and env["notices"] == []

    # Built once per content of its folder: the same wheel file again, not rebuilt.
    built = next((ws.dir / "wheels" / "built").glob("jc-local-lib-*/*.whl"))
    stamp = built.stat().st_mtime_ns
    again = wheelhouse.kernel_environment(ws, python=str(kernel_python))
    assert again == env and built.stat().st_mtime_ns == stamp
    # An edit to the package makes a new wheel.
    module = kernel_python.parents[2] / "src" / "jc_local_lib" / "__init__.py"
    module.write_text(module.read_text() + "# edited\n")
    edited = wheelhouse.kernel_environment(ws, python=str(kernel_python))
    assert edited["wheels"] != env["wheels"]


def test_facts_of_this_machine(ws: Workspace) -> None:
    host = LocalHost("local", {}, ws)
    facts = wheelhouse.host_facts(host, ws)
    assert facts.online  # this machine reaches its index
    assert facts.python.count(".") == 1 and facts.machine
    cached = json.loads((ws.dir / "hosts" / "local.json").read_text())
    assert cached["online"] is True
    # `offline: true` wins over what the host says.
    assert wheelhouse.host_facts(LocalHost("local", {"offline": True}, ws), ws).online is False


def test_manylinux_platforms_follow_the_hosts_glibc() -> None:
    facts = HostFacts(python="3.11", machine="aarch64", glibc="2.28")
    platforms = facts.platforms()
    assert platforms[0] == "manylinux_2_28_aarch64" and "manylinux_2_17_aarch64" in platforms
    assert "manylinux_2_29_aarch64" not in platforms
    assert platforms[-4:] == ["manylinux2014_aarch64", "manylinux2010_aarch64",
                              "manylinux1_aarch64", "linux_aarch64"]
    assert facts.abi() == "cp311"


def test_a_host_without_index_gets_wheels_for_its_platform(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another platform than this one: the wheels must be the target's, not ours.
    facts = HostFacts(python="3.12", machine="aarch64", glibc="2.31", online=False, uv="")
    # docopt 0.6.2 is an sdist only: it is built here into a pure wheel, which travels.
    env = {"requirements": ["six==1.17.0", "pyyaml==6.0.2", "jc-nowhere-at-all==1.0",
                            "docopt==0.6.2"],
           "wheels": {}, "python": None, "no_index": False, "installer": "auto"}
    shipped = wheelhouse.for_host(ws, env, facts)
    names = sorted(shipped["wheels"])
    yaml = next(n for n in names if n.lower().startswith("pyyaml-6.0.2-"))
    assert "-cp312-cp312-" in yaml and "aarch64" in yaml
    assert any(n.startswith("six-1.17.0-") for n in names)
    assert shipped["no_index"] is True
    assert any(n.startswith("docopt-0.6.2-") and n.endswith("-none-any.whl") for n in names)
    assert shipped["requirements"] == ["six==1.17.0", "pyyaml==6.0.2", "docopt==0.6.2"]
    (notice,) = shipped["notices"]
    assert notice.startswith("jc-nowhere-at-all: no wheel for Python 3.12 on aarch64")
    store = BlobStore(ws.blobs_dir)
    assert all(store.has(d) for d in shipped["wheels"].values())
    # uv's wheel for that platform, for the builder to unpack.
    (uv_name, uv_digest), = shipped["uv_wheel"].items()
    assert uv_name.startswith("uv-") and "aarch64" in uv_name and store.has(uv_digest)

    # Again: everything from the cache, pip not asked (a pip that cannot run proves it).
    cached = sorted(p.name for p in (ws.dir / "wheels").glob("*.whl"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # a pip run now would find nothing
    assert wheelhouse.for_host(ws, env, facts) == shipped
    assert sorted(p.name for p in (ws.dir / "wheels").glob("*.whl")) == cached


def test_a_host_with_an_index_and_uv_is_left_as_it_is(ws: Workspace) -> None:
    facts = HostFacts(online=True, uv="/usr/local/bin/uv")
    env = {"requirements": ["six==1.17.0"], "wheels": {}, "python": None, "no_index": False}
    assert wheelhouse.for_host(ws, env, facts) == env
    assert not (ws.dir / "wheels").exists()  # nothing downloaded


def test_what_only_this_platform_needs_is_left_out_with_a_notice(
        ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed distribution (a real .dist-info on sys.path) that needs one helper only
    # on Linux, one only through an extra, and six everywhere.
    info = tmp_path / "site" / "jc_needs_helpers-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: jc-needs-helpers\nVersion: 1.0\n"
        "Requires-Dist: jc-linux-helper; sys_platform == \"linux\"\n"
        "Requires-Dist: jc-extra-helper; extra == \"fast\"\nRequires-Dist: six\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    windows = HostFacts(python="3.11", system="win32", machine="AMD64", online=True, uv="uv")
    linux = HostFacts(python="3.11", system="linux", machine="x86_64", online=True, uv="uv")
    # (other installed distributions may have Linux-only needs too: look at ours)
    only = wheelhouse.client_only(windows, "3.11")
    assert only["jc-linux-helper"] == 'sys_platform == "linux"'
    assert "jc-extra-helper" not in only and "six" not in only
    assert "jc-linux-helper" not in wheelhouse.client_only(linux, "3.11")

    env = {"source": "kernel", "requirements": ["jc-linux-helper==2.0", "jc-extra-helper==1.0",
                                                "six==1.17.0"],
           "wheels": {}, "python": "3.11", "no_index": False}
    shipped = wheelhouse.for_host(ws, env, windows)
    assert shipped["requirements"] == ["jc-extra-helper==1.0", "six==1.17.0"]
    assert shipped["notices"] == ['jc-linux-helper: left out, only needed where sys_platform '
                                  '== "linux" (not on the target: Python 3.11, win32)']
    assert wheelhouse.for_host(ws, env, linux) == env  # Linux needs it: nothing changes


def test_kernel_environment_on_the_local_target_follows_edits_of_the_local_package(
        tmp_path: Path, kernel_python: Path) -> None:
    project = tmp_path / "proj"
    (project / ".jupyter_compute").mkdir(parents=True)
    (project / "greet.py").write_text("import jc_local_lib, sys\n"
                                      "print(jc_local_lib.GREETING, sys.prefix)\n")
    module = kernel_python.parents[2] / "src" / "jc_local_lib" / "__init__.py"

    def submit() -> str:
        out = kernel_cli(kernel_python, project, "submit", "greet.py", "--env", "kernel",
                         "--wait")
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    module.write_text("GREETING = 'first'\n")
    first = submit()
    assert "first " in first and "/.jupyter_compute/envs/" in first  # the kernel's packages
    assert "reusing environment" in submit()
    module.write_text("GREETING = 'edited'\n")  # an edit makes a new wheel, a new environment
    edited = submit()
    assert "edited " in edited and "building environment" in edited
