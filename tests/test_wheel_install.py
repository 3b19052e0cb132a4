"""A non-editable install works: the wheel, built from a copy of the checkout and installed into a
fresh venv, runs from outside the repository, migrates an empty database and serves the page."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
import uuid
import zipfile
from pathlib import Path

import pytest
import requests

from telnyx_flask.embedded import free_port

from . import helpers
from .helpers import app_settings, throwaway_database
from .servers import ROOT
from .test_make_run import copy_checkout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from what a clone would have, with the locked setuptools (no download)."""
    source = tmp_path_factory.mktemp("source")
    copy_checkout(source)  # a fresh tree: setuptools' build/ would ship files deleted since
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(source)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return next(out.glob("telnyx_flask-*.whl"))


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory) -> Path:
    """A new venv holding only the wheel; its dependencies are the ones .venv already has."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = Path(
        run_python(python, "import sysconfig; print(sysconfig.get_path('purelib'))")
    )
    # A plain path line, not `import site`: .venv's own .pth files (the editable install of the
    # checkout among them) are not run, so `telnyx_flask` can only come from the wheel.
    (site_packages / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    return python


def run_python(python: Path, code: str, **kwargs) -> str:
    return subprocess.run(
        [python, "-c", code], check=True, capture_output=True, text=True, **kwargs
    ).stdout.strip()


def test_the_wheel_has_the_whole_package_and_its_data(wheel):
    # A subpackage missing from setup.cfg's `packages` list, or a file type missing from its
    # package_data, would be left out of the wheel without a word.
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"telnyx_flask/{path.relative_to(ROOT / 'telnyx_flask')}"
        for pattern in ("**/*.py", "lua/*.lua", "*.yaml")
        for path in (ROOT / "telnyx_flask").glob(pattern)
    }
    for folder in ("sql", "static"):
        expected |= {
            f"telnyx_flask/{folder}/{path.relative_to(ROOT / folder)}"
            for path in (ROOT / folder).rglob("*")
            if path.is_file()
        }
    assert sorted(expected - names) == []
    assert any(".dist-info/" in name and name.endswith("/LICENSE") for name in names)


def test_installed_from_the_wheel_it_migrates_an_empty_database_and_serves_the_page(
    venv_python, tmp_path
):
    outside = tmp_path / "elsewhere"  # neither the checkout nor its parent is on the path
    outside.mkdir()
    installed = run_python(
        venv_python, "import telnyx_flask; print(telnyx_flask.__file__)", cwd=outside
    )
    assert not Path(installed).is_relative_to(ROOT), installed
    site_packages = Path(installed).parent.parent
    # migrations.py takes them from package_files.sql_dir(): the copy inside the wheel.
    migrations_dir = run_python(
        venv_python,
        "from telnyx_flask.migrations import MIGRATIONS_DIR; print(MIGRATIONS_DIR)",
        cwd=outside,
    )
    assert Path(migrations_dir) == site_packages / "telnyx_flask" / "sql"
    name = f"telnyx_flask_wheel_{uuid.uuid4().hex[:10]}"
    with throwaway_database(helpers.ADMIN_DATABASE_URL, name, migrate=False) as url:
        settings = app_settings(
            url, f"telnyx-flask-test:{uuid.uuid4().hex[:10]}:", "http://127.0.0.1:9"
        )
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")},
            **{key: str(value) for key, value in settings.items() if key != "TESTING"},
        }
        upgraded = subprocess.run(
            [venv_python, "-m", "flask", "--app", "telnyx_flask", "db", "upgrade"],
            cwd=outside,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert upgraded.returncode == 0, upgraded.stderr
        migrations = sorted(path.stem.split("_", 1)[0] for path in (ROOT / "sql").glob("*.sql"))
        assert upgraded.stdout.strip() == f"applied {', '.join(migrations)}"

        port = free_port()
        server = subprocess.Popen(
            [venv_python, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "telnyx_flask:create_app()"],
            cwd=outside,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        try:
            page = wait_for_page(f"http://127.0.0.1:{port}/", server)
            assert page.status_code == 200, (
                "no page: create_app's static_folder must be package_files.static_dir()"
            )
            assert page.text == (ROOT / "static" / "index.html").read_text()
            for asset in ("/static/style.css", "/static/js/app.js"):
                served = requests.get(f"http://127.0.0.1:{port}{asset}", timeout=10)
                assert served.status_code == 200, asset
                assert served.content == (ROOT / asset.lstrip("/")).read_bytes()
        finally:
            server.terminate()
            output = server.communicate(timeout=30)[0]
        assert "Traceback" not in output, output


def wait_for_page(url: str, server: subprocess.Popen, timeout: float = 60) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"gunicorn exited ({server.returncode}):\n{server.communicate()[0]}")
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            time.sleep(0.2)  # the port opens when the worker is ready; nothing to wait on
    pytest.fail(f"gunicorn did not answer within {timeout} s")
