"""The recording proxy under gunicorn: it fetches only from RECORDING_HOSTS, follows a redirect
only to another allowed place, and never lets a browser sniff what it streams."""

from __future__ import annotations

import threading

import pytest
import requests
from werkzeug.wrappers import Request, Response

from telnyx_flask.config import DEFAULT_RECORDING_HOSTS, RecordingSource
from telnyx_flask.recordings import allowed_recording_url

from .helpers import app_settings
from .servers import Gunicorn
from .webhook_sink import ThreadedServer

AUDIO = bytes(range(256)) * 16


class RecordingHost:
    """A local stand-in for a recording host that counts the requests it gets."""

    def __init__(self, name: str, redirect_to: str | None = None):
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.redirect_to = redirect_to
        self.server = ThreadedServer(self.app, name).start()
        self.url = self.server.url

    @Request.application
    def app(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request.path)
        if request.path == "/ok.mp3":
            return Response(AUDIO, mimetype="audio/mpeg")
        if request.path == "/page.mp3":
            return Response("<script>alert(1)</script>", mimetype="text/html")
        if request.path == "/elsewhere.mp3":
            return Response(status=302, headers={"Location": f"{self.redirect_to}/ok.mp3"})
        if request.path == "/here.mp3":
            return Response(status=307, headers={"Location": "/ok.mp3"})
        return Response("not found", status=404)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def hosts():
    """An allowed host, and one off the list that the allowed one redirects to."""
    off_list = RecordingHost("off-list-host")
    allowed = RecordingHost("allowed-host", redirect_to=off_list.url)
    yield allowed, off_list
    allowed.stop()
    off_list.stop()


@pytest.fixture(scope="module")
def server(database_url, redis_prefix, fake_telnyx, hosts):
    """Production under gunicorn; the allowed test host is added to Telnyx's by explicit origin
    (plain http, which only an explicit entry allows)."""
    allowed, _ = hosts
    settings = app_settings(database_url, redis_prefix, fake_telnyx.base_url)
    settings["RECORDING_HOSTS"] = ",".join((*DEFAULT_RECORDING_HOSTS, allowed.url))
    with Gunicorn(settings, workers=1) as server:
        yield server


@pytest.fixture
def recorded_call(db_rows, clean_storage, hosts):
    """Log a call whose stored recording link is the given URL; its id. Hosts start uncounted."""
    for host in hosts:
        with host.lock:
            host.requests.clear()

    def add(recording_url: str) -> str:
        return db_rows(
            "INSERT INTO call_logs (call_sid, direction, from_number, phone_number, to_number,"
            " outcome, recording_url) VALUES (gen_random_uuid()::text, 'inbound',"
            " '+13125550147', '+13125550147', '+14155550123', 'answered', %s)"
            " RETURNING id::text",
            (recording_url,),
        )[0]["id"]

    return add


def fetch(server, agent, call_id: str) -> requests.Response:
    return requests.get(
        f"{server.url}/api/calls/{call_id}/recording", headers=agent.headers, timeout=10
    )


def test_a_recording_on_an_allowed_host_streams_with_nosniff(server, agent, recorded_call, hosts):
    allowed, _ = hosts
    response = fetch(server, agent, recorded_call(f"{allowed.url}/ok.mp3"))
    assert response.status_code == 200
    assert response.content == AUDIO
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_recording_that_is_not_audio_is_served_as_a_download(server, agent, recorded_call, hosts):
    allowed, _ = hosts
    response = fetch(server, agent, recorded_call(f"{allowed.url}/page.mp3"))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "where",
    [
        "{off_list}/ok.mp3",  # a host that is not on the list
        "http://169.254.169.254/latest/meta-data/",  # a cloud metadata service
        "http://s3.amazonaws.com/telephony-recorder-prod/a.mp3",  # Telnyx's bucket, not https
        "https://s3.amazonaws.com/someone-elses-bucket/a.mp3",  # Telnyx's host, not its bucket
        "https://s3.amazonaws.com/telephony-recorder-prod/../other/a.mp3",
        "https://s3.amazonaws.com@{off_list_host}/telephony-recorder-prod/a.mp3",
    ],
)
def test_a_recording_off_the_allowed_hosts_is_refused_and_never_fetched(
    server, agent, recorded_call, hosts, where
):
    _, off_list = hosts
    url = where.format(off_list=off_list.url, off_list_host=off_list.url.split("//")[1])
    response = fetch(server, agent, recorded_call(url))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "recording_source_refused"
    assert off_list.requests == []


def test_a_redirect_off_the_allowed_hosts_is_not_followed(server, agent, recorded_call, hosts):
    allowed, off_list = hosts
    response = fetch(server, agent, recorded_call(f"{allowed.url}/elsewhere.mp3"))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "recording_source_refused"
    assert allowed.requests == ["/elsewhere.mp3"]
    assert off_list.requests == []


def test_a_redirect_within_an_allowed_host_is_followed(server, agent, recorded_call, hosts):
    allowed, _ = hosts
    response = fetch(server, agent, recorded_call(f"{allowed.url}/here.mp3"))
    assert response.status_code == 200
    assert response.content == AUDIO
    assert allowed.requests == ["/here.mp3", "/ok.mp3"]


TELNYX = tuple(
    RecordingSource(*source)
    for source in (
        ("https", "s3.amazonaws.com", 443, "/telephony-recorder-prod"),
        ("https", "s3.*.amazonaws.com", 443, "/telephony-recorder-prod"),
        ("https", "*.telnyx.com", 443, ""),
    )
)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://s3.amazonaws.com/telephony-recorder-prod/a/b.mp3?X-Amz-Expires=600", True),
        ("https://s3.eu-central-1.amazonaws.com/telephony-recorder-prod-fr5/a.wav", True),
        ("https://api.telnyx.com/v2/recordings/abc.mp3", True),
        ("https://s3.amazonaws.com:8443/telephony-recorder-prod/a.mp3", False),
        ("https://evil-telnyx.com/a.mp3", False),
        ("https://telnyx.com.evil.example/a.mp3", False),
        ("https://user@api.telnyx.com/a.mp3", False),
        ("https://s3.amazonaws.com/telephony-recorder-prod/%2e%2e/other/a.mp3", False),
        ("file:///etc/passwd", False),
        ("not a url", False),
    ],
)
def test_which_urls_telnyx_defaults_allow(url, allowed):
    assert allowed_recording_url(url, TELNYX) is allowed
