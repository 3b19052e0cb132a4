"""WSGI entry point: `gunicorn wsgi:app` (settings: gunicorn.conf.py and the environment)."""

from telnyx_flask import create_app

app = create_app()
