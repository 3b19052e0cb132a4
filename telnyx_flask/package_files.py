"""Where the migrations (`sql/`) and the page (`static/`) are, in a checkout or an installed wheel.

Both stay at the top of the repository; building the package maps them into it
(setup.cfg's package_dir), so a wheel has them as `telnyx_flask/sql` and `telnyx_flask/static`.
A checkout, and the editable install `make` does, use the repository's own folders.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def sql_dir() -> Path:
    """The folder of numbered migrations."""
    return _data_dir("sql")


def static_dir() -> Path:
    """The softphone page's folder: index.html, style.css, js/."""
    return _data_dir("static")


def _data_dir(name: str) -> Path:
    # The installed copy first: beside an installed package, ../sql could be anything.
    for candidate in (PACKAGE / name, PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"telnyx-flask: no {name}/ folder in {PACKAGE} or {PACKAGE.parent}: "
        "install the package from a wheel or run it from a checkout"
    )
