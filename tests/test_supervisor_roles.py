"""Roles (issue 17): agent or supervisor, set from the CLI; supervisor endpoints refuse agents."""

from __future__ import annotations

import pytest

from telnyx_flask.users import set_role


@pytest.fixture
def settings(settings):
    """Sessions read afresh on every request, so a role change shows on the next one."""
    settings["AUTH_SESSION_CACHE_SECONDS"] = "0"
    return settings


def test_existing_and_new_users_are_agents(client, agent, db_rows):
    assert db_rows("SELECT role FROM users WHERE id = %s", (agent.id,)) == [{"role": "agent"}]
    me = client.get("/api/auth/me", headers=agent.headers).get_json()["user"]
    assert me["role"] == "agent"


def test_an_agent_gets_403_from_the_supervisor_summary(client, agent):
    response = client.get("/api/supervisor/summary", headers=agent.headers)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "supervisors_only"


def test_nobody_signed_in_gets_401_from_the_supervisor_summary(client):
    assert client.get("/api/supervisor/summary").status_code == 401


def test_a_supervisor_gets_the_summary(client, make_agent):
    boss = make_agent("Sue Visor", role="supervisor")
    response = client.get("/api/supervisor/summary", headers=boss.headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["today"]["offered"] == 0
    assert [agent["name"] for agent in body["agents"]] == ["Sue Visor"]
    assert len(body["hours"]) == 24


def test_create_with_role_and_list(runner, db_rows):
    result = runner.invoke(
        args=[
            "users",
            "create",
            "--email",
            "sue@example.test",
            "--name",
            "Sue",
            "--role",
            "supervisor",
            "--password-stdin",
        ],
        input="a long enough password\n",
    )
    assert result.exit_code == 0, result.output
    assert "created supervisor sue@example.test" in result.output
    assert db_rows("SELECT role FROM users WHERE email = 'sue@example.test'") == [
        {"role": "supervisor"}
    ]
    listed = runner.invoke(args=["users", "list"]).output
    assert "sue@example.test\tSue\t-\tsupervisor\tactive" in listed


def test_create_refuses_an_unknown_role(runner, db_rows):
    result = runner.invoke(
        args=["users", "create", "--email", "x@example.test", "--name", "X", "--role", "boss"],
        input="a long enough password\n",
    )
    assert result.exit_code != 0
    assert "boss" in result.output
    assert db_rows("SELECT count(*) AS n FROM users") == [{"n": 0}]


def test_set_role_promotes_and_demotes_on_the_next_request(runner, client, agent):
    result = runner.invoke(args=["users", "set-role", agent.email, "supervisor"])
    assert result.exit_code == 0, result.output
    assert f"{agent.email} is now a supervisor" in result.output
    assert client.get("/api/supervisor/summary", headers=agent.headers).status_code == 200
    assert runner.invoke(args=["users", "set-role", agent.email, "agent"]).exit_code == 0
    assert client.get("/api/supervisor/summary", headers=agent.headers).status_code == 403


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nobody@example.test", "supervisor"], "no agent with email nobody@example.test"),
        (["alice@example.test", "king"], "'king' is not one of"),
    ],
)
def test_set_role_refusals(runner, agent, arguments, message):
    result = runner.invoke(args=["users", "set-role", *arguments])
    assert result.exit_code != 0
    assert message in result.output


def test_set_role_refuses_an_unknown_role_in_code(app):
    with app.app_context(), pytest.raises(ValueError, match="role must be one of"):
        set_role("alice@example.test", "owner")


def test_the_event_stream_refuses_a_watch_that_is_neither_true_nor_false(client, agent):
    response = client.get("/api/telnyx/events?watch=maybe", headers=agent.headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_watch"
