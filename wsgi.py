"""WSGI entry point: `gunicorn wsgi:app` (settings: gunicorn.conf.py and the environment).

It refuses to serve against a database whose schema is behind the code.
"""

from telnyx_flask import create_app, require_current_schema

app = create_app()
require_current_schema(app)
