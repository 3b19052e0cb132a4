// Presence: the agent's own (Available, Away, On a call) in the header with a switch between
// Available and Away, the team's presence, and whether this page may ring: only while its
// agent is available. The server works presence out; this page shows it and asks to change it.
import { api } from "./api.js";

export const PRESENCE_LABELS = { available: "Available", away: "Away", on_call: "On a call" };

const $ = (id) => document.getElementById(id);

export class Presence {
  constructor({ onChange }) {
    this.onChange = onChange;
    this.me = null;
    this.agents = new Map(); // by id: {id, name, presence, chosen}
    this.error = null;
  }

  /** Wire the header's switch (once, at boot). */
  bind() {
    $("presence-choice").addEventListener("change", (event) => this.choose(event.target.value));
  }

  start(me) {
    this.me = me;
    this.render(0);
  }

  reset() {
    this.me = null;
    this.agents.clear();
    this.error = null;
  }

  /** The agent's own record, once the snapshot or an event has told this page. */
  get mine() {
    return (this.me && this.agents.get(this.me.id)) || null;
  }

  /** Whether this page may ring: unknown counts as available, so no call is missed. */
  get rings() {
    const mine = this.mine;
    return !mine || mine.presence === "available";
  }

  /** Take what a live event says about presence; true if it was about presence. */
  handleEvent(type, data) {
    if (type === "snapshot") {
      this.agents = new Map((data.agents || []).map((agent) => [agent.id, agent]));
      return true;
    }
    if (type === "agent.presence") {
      this.put({ ...data.agent, presence: data.presence, chosen: data.chosen });
      return true;
    }
    return false;
  }

  put(agent) {
    const known = this.agents.get(agent.id) || {};
    this.agents.set(agent.id, { ...known, ...agent });
  }

  async choose(chosen) {
    const select = $("presence-choice");
    select.disabled = true;
    this.error = null;
    try {
      const reply = await api("/api/agents/me/presence", { method: "PUT", body: { presence: chosen } });
      this.put(reply.presence);
    } catch (failure) {
      if (failure.status !== 401) this.error = `Could not change your status: ${failure.message}`;
    } finally {
      select.disabled = false;
    }
    this.onChange();
  }

  /** Header, team list, and the hint on calls this page shows without ringing. */
  render(waiting) {
    const mine = this.mine;
    const effective = mine ? mine.presence : "available";
    const box = $("presence");
    box.dataset.presence = effective;
    document.body.dataset.presence = effective;
    const select = $("presence-choice");
    const chosen = mine && mine.chosen ? mine.chosen : effective === "away" ? "away" : "available";
    if (!select.disabled && document.activeElement !== select) select.value = chosen;
    $("presence-on-call").hidden = effective !== "on_call";
    const error = $("presence-error");
    error.textContent = this.error || "";
    error.hidden = !this.error;
    const hint = $("quiet-hint");
    hint.hidden = waiting === 0 || this.rings;
    hint.textContent = `Not ringing: you are ${PRESENCE_LABELS[effective] || effective}.`;
    this.renderTeam();
  }

  renderTeam() {
    const list = $("team-list");
    const agents = [...this.agents.values()].sort((a, b) => (a.name || "").localeCompare(b.name || ""));
    $("team").hidden = agents.length === 0;
    const rows = agents.map((agent) => {
      let row = list.querySelector(`li[data-agent-id="${CSS.escape(agent.id)}"]`);
      if (!row) {
        row = document.createElement("li");
        row.dataset.agentId = agent.id;
        row.innerHTML = `<span class="dot" aria-hidden="true"></span><span class="name"></span>
          <span class="presence-label"></span>`;
      }
      row.dataset.presence = agent.presence;
      const you = this.me && agent.id === this.me.id ? " (you)" : "";
      row.querySelector(".name").textContent = `${agent.name}${you}`;
      row.querySelector(".presence-label").textContent =
        PRESENCE_LABELS[agent.presence] || agent.presence;
      return row;
    });
    const current = [...list.children];
    if (rows.length !== current.length || rows.some((row, i) => row !== current[i])) {
      list.replaceChildren(...rows);
    }
  }
}
