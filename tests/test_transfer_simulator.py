"""The simulator's transfer of a caller already bridged to an agent, as a colleague's transfer
does it: the new leg is dialled, and only once it answers is the first agent's leg hung up."""

from __future__ import annotations

import pytest

from . import test_simulator
from .test_simulator import AGENT, event_types

# The in-process simulator and its webhook sink, as test_simulator.py runs them.
sink, sim_server, sim = test_simulator.sink, test_simulator.sim_server, test_simulator.sim

COLLEAGUE = "sip:agentbob@sip.telnyx.com"


def test_transferring_a_bridged_caller_bridges_the_colleague_and_hangs_up_the_first_agent(sim):
    ids = sim.bridged_call()
    caller = ids["call_control_id"]
    before = len(sim.webhooks(ids["call_session_id"]))

    sim.ok(caller, "transfer", {"to": COLLEAGUE})

    hooks = sim.webhooks(ids["call_session_id"])[before:]
    assert event_types(hooks) == [
        "call.initiated",
        "call.answered",
        "call.hangup",
        "call.bridged",
        "call.bridged",
    ]
    colleague = hooks[0].payload["call_control_id"]
    assert (hooks[0].payload["state"], hooks[0].payload["to"]) == ("bridging", COLLEAGUE)
    first_agent_leg = hooks[2].payload
    assert first_agent_leg["call_control_id"] not in (caller, colleague)
    assert first_agent_leg["hangup_cause"] == "normal_clearing"
    assert [hooks[3].payload["call_control_id"], hooks[4].payload["call_control_id"]] == [
        caller,
        colleague,
    ]
    legs = {leg["to"]: leg for leg in sim.state(caller)["legs"]}
    assert legs[AGENT]["state"] == "ended"
    assert (legs[COLLEAGUE]["state"], legs[COLLEAGUE]["bridged_with"]) == ("bridged", caller)
    caller_leg = next(leg for leg in legs.values() if leg["call_control_id"] == caller)
    assert (caller_leg["state"], caller_leg["bridged_with"]) == ("bridged", colleague)


@pytest.mark.parametrize("mode", ["busy", "no-answer"])
def test_a_colleague_who_does_not_pick_up_leaves_the_caller_with_the_first_agent(sim, mode):
    ids = sim.bridged_call()
    caller = ids["call_control_id"]
    before = len(sim.webhooks(ids["call_session_id"]))
    sim.http.post(f"{sim.url}/sim/transfer-behaviour", json={"mode": mode}).raise_for_status()

    sim.ok(caller, "transfer", {"to": COLLEAGUE})

    hooks = sim.webhooks(ids["call_session_id"])[before:]
    assert event_types(hooks) == ["call.initiated", "call.hangup"]
    assert hooks[1].payload["call_control_id"] == hooks[0].payload["call_control_id"] != caller
    legs = {leg["to"]: leg for leg in sim.state(caller)["legs"]}
    assert (legs[AGENT]["state"], legs[COLLEAGUE]["state"]) == ("bridged", "ended")
    caller_leg = next(leg for leg in legs.values() if leg["call_control_id"] == caller)
    assert caller_leg["bridged_with"] == legs[AGENT]["call_control_id"]
    sim.http.post(f"{sim.url}/sim/transfer-behaviour", json={"mode": "answer"})
