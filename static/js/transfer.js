// Transfer to a colleague: the Transfer control on the call this agent is on (a list of
// available colleagues, then "Offered to …" with Cancel), and the card that rings on the
// colleague's page ("Transferred from …", Answer / Decline). The offer lives on the call
// (call.transfer, from the snapshot and call.transfer_offered); app.js owns the calls.
import { api } from "./api.js";
import { formatDuration, formatPhone } from "./format.js";

const $ = (id) => document.getElementById(id);
const encode = encodeURIComponent;
// What the offering agent is told when an offer ends without the colleague taking the call.
const ENDED_NOTES = {
  declined: (to) => `${to} declined the transfer. The call is still yours.`,
  expired: (to) => `${to} did not answer the transfer. The call is still yours.`,
  failed: (to) => `The transfer to ${to} did not go through. The call is still yours.`,
};

function knownName(call) {
  const name = call.caller_name;
  return name && !/^[+\d\s().-]+$/.test(name) ? name : null;
}

function callerName(call) {
  return knownName(call) || formatPhone(call.from);
}

function secondsUntil(iso) {
  const at = Date.parse(iso);
  return Number.isNaN(at) ? 0 : Math.max(0, (at - Date.now()) / 1000);
}

/** The offer fields of a call.transfer_offered event, as the snapshot spells them. */
function offerOf(data) {
  return { from_agent: data.from_agent, to_agent: data.to_agent, expires_at: data.expires_at };
}

export class Transfers {
  /**
   * me(): the signed-in agent; calls(): app.js's Map of live calls; handOver(id, agent): the
   * call is now `agent`'s (app.js moves the active call); announce(text): screen readers;
   * changed(): render the page again; newCard(id, {onAnswer, onDecline}): app.js's ringing card.
   */
  constructor({ me, calls, handOver, announce, changed, newCard }) {
    this.me = me;
    this.makeCard = newCard;
    this.calls = calls;
    this.handOver = handOver;
    this.announce = announce;
    this.changed = changed;
    this.agents = [];
    this.agentsKey = "";
    this.busy = new Set();
    this.errors = new Map(); // call_control_id -> message, for this page's own requests
    this.notes = new Map(); // call_control_id -> what happened to an offer this agent made
    this.cards = new Map();
    this.reloadTimer = null;
  }

  /** After signing in: the colleague list. */
  start() {
    this.loadAgents();
  }

  reset() {
    this.agents = [];
    this.agentsKey = "";
    this.busy.clear();
    this.errors.clear();
    this.notes.clear();
    for (const card of this.cards.values()) card.remove();
    this.cards.clear();
  }

  async loadAgents() {
    try {
      const reply = await api("/api/agents");
      this.agents = reply.agents;
    } catch {
      return; // signed out, or the server is down: the next presence event tries again
    }
    this.changed();
  }

  /** Handles the events app.js passes on; true when it was one of these. */
  handleEvent(type, data) {
    if (type === "agent.presence") {
      // Whatever changed, the list is read again (once for a burst of changes).
      clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => this.loadAgents(), 200);
      return true;
    }
    if (type === "call.transfer_offered") {
      this.offered(data);
      return true;
    }
    if (type === "call.transfer_ended") {
      this.ended(data);
      return true;
    }
    return false;
  }

  offered(data) {
    const id = data.call_control_id;
    // A page that did not know the call yet (it opened meanwhile) takes it from the event.
    const call = this.calls().get(id) || {
      call_control_id: id,
      status: data.status,
      from: data.from,
      to: data.to,
      caller_name: data.caller_name,
      prospect_id: data.prospect_id,
      answered_at: data.answered_at,
    };
    this.calls().set(id, { ...call, transfer: offerOf(data) });
    this.notes.delete(id);
    const me = this.me();
    if (me && data.to_agent.id === me.id) {
      this.announce(`${data.from_agent.name} is transferring the call from ${callerName(call)} to you`);
    }
  }

  ended(data) {
    const id = data.call_control_id;
    const call = this.calls().get(id);
    if (call) this.calls().set(id, { ...call, transfer: null });
    this.errors.delete(id);
    const me = this.me();
    if (!me) return;
    const from = data.from_agent;
    const to = data.to_agent;
    if (data.result === "accepted") {
      this.handOver(id, to);
      if (from.id === me.id) this.announce(`${to.name} took the call`);
      if (to.id === me.id) this.announce(`You took the call from ${from.name}`);
    } else if (data.result === "failed") {
      this.handOver(id, from);
    }
    if (from.id === me.id && ENDED_NOTES[data.result]) {
      this.notes.set(id, ENDED_NOTES[data.result](to.name));
      this.announce(this.notes.get(id));
    }
    if (to.id === me.id && data.result === "cancelled") {
      this.announce(`${from.name} took the transfer back`);
    }
  }

  /** The calls offered to this agent now, oldest offer first. */
  offersToMe() {
    const me = this.me();
    if (!me) return [];
    return [...this.calls().values()]
      .filter((call) => call.transfer && call.transfer.to_agent.id === me.id && call.status !== "ended")
      .sort((a, b) => Date.parse(a.transfer.expires_at || 0) - Date.parse(b.transfer.expires_at || 0));
  }

  /** Draw the Transfer control for the active call and the offer cards; returns how many
   * offers ring on this page. */
  render(active) {
    this.renderControl(active);
    const offers = this.offersToMe();
    this.renderOffers(offers);
    return offers.length;
  }

  // ---- the offering agent's side ------------------------------------------------------------

  renderControl(call) {
    const box = $("transfer-control");
    const me = this.me();
    const shown = Boolean(call && me && call.status === "answered");
    box.hidden = !shown;
    if (!shown) return;
    if (box.dataset.callControlId !== call.call_control_id) {
      box.dataset.callControlId = call.call_control_id;
      box.innerHTML = `
        <div class="transfer-pick">
          <label for="transfer-to">Transfer to</label>
          <select id="transfer-to"></select>
          <button type="button" class="transfer-send">Transfer</button>
        </div>
        <p class="transfer-none muted">No colleague is available to take a transfer.</p>
        <div class="transfer-offered">
          <span class="transfer-status" role="status"></span>
          <button type="button" class="transfer-cancel">Cancel transfer</button>
        </div>
        <p class="transfer-note" role="status"></p>
        <p class="error transfer-error" role="alert"></p>`;
      this.agentsKey = "";
      // Colleagues may have signed in since the list was read: read it again for this call.
      this.loadAgents();
      box.querySelector(".transfer-send").addEventListener("click", () =>
        this.offer(call.call_control_id, box.querySelector("select").value),
      );
      box.querySelector(".transfer-cancel").addEventListener("click", () =>
        this.cancel(call.call_control_id),
      );
    }
    const id = call.call_control_id;
    const offer = call.transfer;
    const colleagues = this.agents.filter(
      (agent) => agent.id !== me.id && agent.presence === "available",
    );
    const key = colleagues.map((agent) => `${agent.id}:${agent.name}`).join("|");
    const select = box.querySelector("select");
    if (key !== this.agentsKey) {
      // Rebuilt only when the list changes, so an open list is not closed under the agent.
      const chosen = select.value;
      select.replaceChildren(
        ...colleagues.map((agent) => {
          const option = document.createElement("option");
          option.value = agent.id;
          option.textContent = agent.name;
          return option;
        }),
      );
      if (colleagues.some((agent) => agent.id === chosen)) select.value = chosen;
      this.agentsKey = key;
    }
    const busy = this.busy.has(id);
    box.querySelector(".transfer-pick").hidden = Boolean(offer) || colleagues.length === 0;
    box.querySelector(".transfer-none").hidden = Boolean(offer) || colleagues.length > 0;
    box.querySelector(".transfer-send").disabled = busy;
    box.querySelector(".transfer-offered").hidden = !offer;
    if (offer) {
      box.querySelector(".transfer-status").textContent =
        `Offered to ${offer.to_agent.name}… ${formatDuration(secondsUntil(offer.expires_at))} left`;
    }
    box.querySelector(".transfer-cancel").disabled = busy;
    const note = box.querySelector(".transfer-note");
    note.textContent = this.notes.get(id) || "";
    note.hidden = !this.notes.has(id) || Boolean(offer);
    const error = box.querySelector(".transfer-error");
    error.textContent = this.errors.get(id) || "";
    error.hidden = !this.errors.has(id);
  }

  async send(id, path, method, body) {
    this.busy.add(id);
    this.errors.delete(id);
    this.changed();
    try {
      return await api(`/api/telnyx/calls/${encode(id)}/${path}`, { method, body });
    } finally {
      this.busy.delete(id);
    }
  }

  async offer(id, agentId) {
    if (!agentId) return;
    this.notes.delete(id);
    try {
      const reply = await this.send(id, "transfer", "POST", { agent_id: agentId });
      const call = this.calls().get(id);
      if (call) this.calls().set(id, { ...call, transfer: reply.transfer });
    } catch (failure) {
      if (failure.status !== 401) this.errors.set(id, failure.message);
      if (failure.code === "agent_not_available") this.loadAgents();
    }
    this.changed();
  }

  async cancel(id) {
    try {
      await this.send(id, "transfer", "DELETE");
      const call = this.calls().get(id);
      if (call) this.calls().set(id, { ...call, transfer: null });
    } catch (failure) {
      // 409: the colleague answered (or it expired) first; its event says which.
      if (failure.status !== 401 && failure.status !== 409) this.errors.set(id, failure.message);
    }
    this.changed();
  }

  // ---- the colleague's side -----------------------------------------------------------------

  renderOffers(calls) {
    const section = $("transfer-offers");
    const list = $("transfer-offer-list");
    section.hidden = calls.length === 0;
    const wanted = new Set(calls.map((call) => call.call_control_id));
    for (const [id, card] of this.cards) {
      if (!wanted.has(id)) {
        card.remove();
        this.cards.delete(id);
      }
    }
    for (const call of calls) {
      let card = this.cards.get(call.call_control_id);
      if (!card) {
        card = this.newCard(call.call_control_id);
        this.cards.set(call.call_control_id, card);
        list.append(card);
      }
      this.updateCard(card, call);
    }
  }

  newCard(id) {
    const card = this.makeCard(id, {
      onAnswer: () => this.accept(id),
      onDecline: () => this.decline(id),
    });
    card.classList.add("transfer-card");
    return card;
  }

  updateCard(card, call) {
    const id = call.call_control_id;
    const name = callerName(call);
    const from = call.transfer.from_agent.name;
    card.querySelector(".who").textContent = name;
    card.querySelector(".state").textContent = `Transferred from ${from}`;
    const number = knownName(call) ? `${formatPhone(call.from)} · ` : "";
    card.querySelector(".meta").textContent =
      `${number}${formatDuration(secondsUntil(call.transfer.expires_at))} left to answer`;
    const busy = this.busy.has(id);
    for (const button of card.querySelectorAll("button")) button.disabled = busy;
    card.querySelector(".answer").setAttribute("aria-label", `Answer call from ${name}, transferred from ${from}`);
    card.querySelector(".decline").setAttribute("aria-label", `Decline transfer of call from ${name}`);
    const error = card.querySelector(".card-error");
    error.textContent = this.errors.get(id) || "";
    error.hidden = !this.errors.has(id);
  }

  async accept(id) {
    try {
      const reply = await this.send(id, "transfer/accept", "POST");
      const call = this.calls().get(id);
      if (call) this.calls().set(id, { ...call, transfer: null, transferred_to: reply.transferred_to });
      this.handOver(id, this.me());
    } catch (failure) {
      this.failed(id, failure);
    }
    this.changed();
  }

  async decline(id) {
    try {
      await this.send(id, "transfer/decline", "POST");
      const call = this.calls().get(id);
      if (call) this.calls().set(id, { ...call, transfer: null });
    } catch (failure) {
      this.failed(id, failure);
    }
    this.changed();
  }

  failed(id, failure) {
    const call = this.calls().get(id);
    if (failure.status === 404) {
      // The caller hung up first: the call's end removes it everywhere.
      if (call) this.calls().set(id, { ...call, transfer: null });
      this.announce("That call has already ended");
    } else if (failure.status === 409 && failure.code === "transfer_not_open") {
      if (call) this.calls().set(id, { ...call, transfer: null });
      this.announce("That transfer is no longer open");
    } else if (failure.status !== 401) {
      this.errors.set(id, failure.message);
      // Refused by Telnyx, the offer is over and its card goes: say why out loud too.
      this.announce(failure.message);
    }
  }
}
