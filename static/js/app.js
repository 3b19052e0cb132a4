// The softphone page: sign-in, live ringing calls, answer/decline/hang up, recent calls.
import { bindSignIn, showSignIn } from "./sign_in.js";
import { api, setUnauthenticatedHandler } from "./api.js";
import { Notifier, Ringtone, TitleFlasher } from "./alerts.js";
import {
  OUTCOME_LABELS,
  formatAge,
  formatDuration,
  formatPhone,
  formatTime,
  secondsSince,
} from "./format.js";
import { SharedLiveEvents } from "./shared_stream.js";
import { forgetCallerContexts, showCallerContext } from "./context.js";
import {
  appendCallNote,
  applyNotesConfig,
  forgetAfterCallForms,
  historyFilterQuery,
  initNotes,
  matchesHistoryFilter,
  offerAfterCallForm,
} from "./notes.js";
import { BrowserPhone, sipHeader } from "./phone.js";
import { Transfers } from "./transfer.js";
import { decorateVoicemailRow, forgetVoicemail, voicemailEvent } from "./voicemail.js";
import { Presence } from "./presence.js";

const $ = (id) => document.getElementById(id);
// How long a card taken by someone else stays, saying who took it.
const TAKEN_LINGER_MS = 900;
const HISTORY_PAGE = 20;
const CONNECTION_LABELS = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};
const PHONE_LABELS = {
  connecting: "connecting to Telnyx…",
  ready: "ready",
  "in-call": "on a call",
  error: "not working",
};

const state = {
  me: null,
  config: null,
  calls: new Map(), // live calls by call_control_id, from the snapshot and events
  cards: new Map(), // card elements by call_control_id
  busy: new Set(), // calls with a request from this page in flight
  cardErrors: new Map(),
  leaving: new Map(), // calls taken by someone else: card stays briefly, saying who
  activeId: null,
  historyRows: new Map(), // <li> by call_control_id
  historyCursor: null,
};

const ringtone = new Ringtone();
const notifier = new Notifier();
const title = new TitleFlasher();
let phone = null;
const presence = new Presence({ onChange: () => render() });
// One event stream per browser, shared by this agent's tabs (shared_stream.js).
const live = new SharedLiveEvents({
  url: "/api/telnyx/events",
  onEvent: handleEvent,
  onStateChange: liveChanged,
  canReconnect: sessionStillValid,
  agentId: () => state.me && state.me.id,
  onRingerChange: render,
  onSignedOutElsewhere: () => signedOut("You signed out in another tab."),
  onSignedInElsewhere: signedInElsewhere,
});

const transfers = new Transfers({
  me: () => state.me,
  calls: () => state.calls,
  handOver,
  announce,
  changed: () => render(),
  newCard,
});

const encode = encodeURIComponent;

/** The caller's name when known (prospect lookup, or caller ID that is more than digits). */
function knownName(call) {
  const name = call.caller_name;
  return name && !/^[+\d\s().-]+$/.test(name) ? name : null;
}

function callerName(call) {
  return knownName(call) || formatPhone(call.from);
}

function announce(text) {
  const region = $("announcer");
  region.textContent = "";
  // A fresh text node each time, so screen readers announce a repeated message too.
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

// ---- signing in and out -------------------------------------------------------------------

async function signedIn(user) {
  const sameAgent = state.me !== null && state.me.id === user.id;
  if (!sameAgent) forgetEverything();
  state.me = user;
  presence.start(user);
  $("agent-name").textContent = user.name;
  $("supervisor-link").hidden = user.role !== "supervisor";
  $("account").hidden = false;
  $("workspace").hidden = false;
  try {
    state.config = await api("/api/softphone/config");
  } catch (failure) {
    if (failure.status === 401) return;
    state.config = null;
  }
  applyConfig();
  live.start();
  transfers.start();
  if (sameAgent) {
    refreshHistory();
  } else {
    loadHistory();
  }
}

function forgetEverything() {
  live.stop({ forget: true });
  presence.reset();
  if (phone) phone.stop();
  phone = null;
  state.calls.clear();
  for (const card of state.cards.values()) card.remove();
  state.cards.clear();
  state.busy.clear();
  state.cardErrors.clear();
  state.leaving.clear();
  state.activeId = null;
  transfers.reset();
  $("history").replaceChildren();
  state.historyRows.clear();
  state.historyCursor = null;
  forgetAfterCallForms();
  forgetVoicemail();
  render();
}

function sessionExpired() {
  if (state.me === null) return;
  live.stop();
  if (phone) phone.stop();
  phone = null;
  showSignIn("Your session has expired. Sign in again to carry on; this page keeps its place.");
}

async function sessionStillValid() {
  try {
    await api("/api/auth/me");
    return true;
  } catch (failure) {
    // 401 opens the sign-in form (the api module's handler); anything else: keep trying.
    return failure.status !== 401;
  }
}

async function signOut() {
  try {
    await api("/api/auth/logout", { method: "POST" });
  } catch {
    // signed out already, or the server is down: the page forgets the agent either way
  }
  live.announceSignOut();
  signedOut("You have signed out.");
}

function signedOut(reason) {
  forgetEverything();
  state.me = null;
  $("account").hidden = true;
  $("workspace").hidden = true;
  showSignIn(reason);
}

/** Another tab signed in: a page showing the sign-in form carries on with that session. */
async function signedInElsewhere() {
  if (!$("sign-in").open) return;
  try {
    const { user } = await api("/api/auth/me");
    $("sign-in").close();
    await signedIn(user);
  } catch {
    // not signed in after all: the form stays
  }
}

// ---- settings from the server -------------------------------------------------------------

function applyConfig() {
  const config = state.config;
  $("simulator").hidden = !(config && config.simulator.enabled);
  applyNotesConfig(config);
  followLeader();
  showRouting();
}

/** The stream's state or this tab's part in sharing it changed: the phone follows the stream. */
function liveChanged(connection) {
  showConnection(connection);
  followLeader();
}

/**
 * Run the in-browser phone in one tab of the browser: the one that holds the shared event stream
 * (shared_stream.js). Every phone of a browser signs in with the agent's credential and Telnyx
 * rings them all with the transferred leg, so with a phone per tab several could answer it.
 * The stream's tab changes only when it closes, so the phone is not restarted (a new login
 * token, a new connection) as the agent moves between tabs, nor while a call is being put
 * through; its audio is heard whichever tab the agent is looking at.
 */
function followLeader() {
  const config = state.config;
  const holdsStream = live.role === "leader" || live.role === "private";
  const wanted = Boolean(config && config.webrtc.enabled && holdsStream);
  if (wanted && !phone) {
    const started = new BrowserPhone({
      sdkUrl: config.webrtc.sdk_url,
      fetchToken: async () =>
        (await api("/api/telnyx/webrtc/token", { method: "POST" })).login_token,
      audio: $("remote-audio"),
      // Only the leg that names the call this agent took (the server's transfer sets it).
      shouldAnswer: (call) =>
        state.activeId !== null && sipHeader(call, config.webrtc.call_header) === state.activeId,
      onStatus: (status, detail) => {
        if (phone === started) showPhoneStatus(status, detail);
      },
    });
    phone = started;
    phone.start();
  } else if (!wanted && phone) {
    phone.stop();
    phone = null;
    delete document.body.dataset.phone;
  } else {
    return; // no change: the routing notice (with the phone's last detail) stands
  }
  showRouting();
}

function showPhoneStatus(status, detail) {
  document.body.dataset.phone = status;
  showRouting(detail);
}

function showRouting(phoneDetail) {
  const config = state.config;
  const routing = $("routing");
  if (!config) {
    routing.textContent = "Could not load this page's settings from the server.";
    return;
  }
  if (config.webrtc.enabled && !phone) {
    routing.textContent =
      "Calls you answer play in this browser, through another of its tabs (the one holding " +
      "the live connection).";
  } else if (config.webrtc.enabled) {
    const status = PHONE_LABELS[document.body.dataset.phone] || "starting";
    routing.textContent = `Calls you answer play in this browser. In-browser phone: ${status}${
      phoneDetail ? ` (${phoneDetail})` : ""
    }.`;
  } else if (config.sip_uri) {
    routing.textContent =
      `Calls you answer go to ${config.sip_uri}: a desk phone or softphone app signed in ` +
      `as that SIP user. In-browser audio is off: ${config.webrtc.reason}.`;
  } else {
    routing.textContent =
      "You have no SIP username, so calls you answer cannot be put through. Ask an " +
      "administrator to run `flask users set-phone`. In-browser audio is off: " +
      `${config.webrtc.reason}.`;
  }
}

// ---- live events --------------------------------------------------------------------------

function handleEvent(type, data) {
  if (!data && type !== "reset") return;
  voicemailEvent(type, data);
  presence.handleEvent(type, data);
  switch (type) {
    case "agent.presence":
      break;
    case "reset":
      // The snapshot that follows is the truth for live calls; events missed meanwhile may
      // include calls that were logged, so the history is fetched again too.
      refreshHistory();
      break;
    case "snapshot":
      replaceCalls(data.calls || []);
      break;
    case "call.ringing":
      merge(data);
      announce(`Incoming call from ${callerName(data)}`);
      break;
    case "call.claimed":
      claimed(data.call_control_id, data.agent, data.action);
      break;
    case "call.released":
      released(data.call_control_id);
      break;
    case "call.answered":
      merge(data);
      break;
    case "call.ended":
      ended(data);
      break;
    case "call.recording":
    case "call.logged":
    case "call.noted":
      refreshHistoryRow(data.call_control_id);
      break;
    default:
      if (!transfers.handleEvent(type, data)) return;
  }
  render();
}

function replaceCalls(calls) {
  state.calls = new Map(calls.map((call) => [call.call_control_id, call]));
  state.activeId = null;
  for (const call of calls) {
    if (isMine(call) && call.status !== "ringing") state.activeId = call.call_control_id;
  }
  for (const id of state.leaving.keys()) {
    if (!state.calls.has(id)) state.leaving.delete(id);
  }
  // A snapshot mid-stream (after a reset) can drop calls that were taken or ended meanwhile,
  // with no event to close their desktop notifications.
  const ringing = calls.filter((call) => call.status === "ringing");
  notifier.keepOnly(new Set(ringing.map((call) => call.call_control_id)));
}

/** The call as known, updated with an event's data. */
function merged(data) {
  const old = state.calls.get(data.call_control_id) || {};
  // Answer and hangup events do not name who took the call; the claim did.
  const claimedBy = data.claimed_by || old.claimed_by || null;
  return { ...old, ...data, claimed_by: claimedBy };
}

function merge(data) {
  state.calls.set(data.call_control_id, merged(data));
}

function isMine(call) {
  return call.claimed_by && state.me && call.claimed_by.id === state.me.id;
}

function claimed(id, agent, action) {
  const call = state.calls.get(id) || { call_control_id: id };
  state.calls.set(id, { ...call, status: "answering", claimed_by: agent, claim_action: action });
  notifier.close(id);
  if (state.me && agent.id === state.me.id) {
    if (action === "answer") state.activeId = id;
    return;
  }
  takenBySomeoneElse(id, agent, action);
}

/** What became of a call claimed by someone else: an agent, or the ring timeout (claimed as
 * "Voicemail" or "Ring timeout", with the action "voicemail" or "timeout"). */
function takenText(action, agent) {
  if (action === "voicemail") return "Sent to voicemail";
  if (action === "timeout") return "Missed: nobody answered in time";
  const verb = action === "decline" ? "Declined" : "Answered";
  return `${verb} by ${agent ? agent.name : "another agent"}`;
}

function takenBySomeoneElse(id, agent, action) {
  const call = state.calls.get(id);
  if (call) announce(`Call from ${callerName(call)}: ${takenText(action, agent)}`);
  clearTimeout(state.leaving.get(id));
  state.leaving.set(
    id,
    setTimeout(() => {
      state.leaving.delete(id);
      const call = state.calls.get(id);
      if (call && call.status === "ended") state.calls.delete(id);
      render();
    }, TAKEN_LINGER_MS),
  );
}

function released(id) {
  const call = state.calls.get(id);
  if (!call) return;
  clearTimeout(state.leaving.get(id));
  state.leaving.delete(id);
  state.calls.set(id, { ...call, status: "ringing", claimed_by: null, claim_action: null });
  if (state.activeId === id) state.activeId = null;
}

/** A transfer moved the call to `agent` (or gave it back): their page now has it active. */
function handOver(id, agent) {
  const call = state.calls.get(id);
  if (!call) return;
  state.calls.set(id, { ...call, claimed_by: { id: agent.id, name: agent.name }, claim_action: "answer" });
  if (state.me && agent.id === state.me.id) {
    state.activeId = id;
  } else if (state.activeId === id) {
    // Telnyx hangs up this browser's leg once the colleague's phone answers.
    state.activeId = null;
  }
}

function ended(data) {
  const id = data.call_control_id;
  const call = merged(data);
  if (state.activeId === id) {
    state.activeId = null;
    if (phone) phone.hangup();
    announce(`Call with ${callerName(call)} ended`);
    offerAfterCallForm(call, callerName(call));
  } else if (call.status === "ringing" || !call.claimed_by) {
    announce(`Call from ${callerName(call)} stopped ringing`);
  }
  if (state.leaving.has(id)) {
    // Still saying who took it: the card leaves when that is done.
    state.calls.set(id, { ...call, status: "ended" });
  } else {
    state.calls.delete(id);
  }
  state.cardErrors.delete(id);
  notifier.close(id);
  refreshHistory();
}

// ---- rendering ----------------------------------------------------------------------------

function ringingCalls() {
  return [...state.calls.values()]
    .filter((call) => {
      if (call.call_control_id === state.activeId) return false;
      if (state.leaving.has(call.call_control_id)) return true;
      return call.status === "ringing" || (call.status === "answering" && isMine(call));
    })
    .sort((a, b) => Date.parse(a.ringing_since || 0) - Date.parse(b.ringing_since || 0));
}

function render() {
  const calls = ringingCalls();
  renderCards(calls);
  renderActive();
  const offered = transfers.render(state.activeId && state.calls.get(state.activeId));
  const waiting = calls.filter((call) => call.status === "ringing");
  $("ringing-count").textContent = waiting.length ? `(${waiting.length})` : "";
  $("no-calls").hidden = calls.length > 0;
  // Only an available agent's page rings; the others show the calls quietly. Every tab shows
  // the call and flashes its title; one of them (live.ringsHere) plays the sound.
  const rings = presence.rings && state.activeId === null;
  ringtone.ring(((waiting.length > 0 && rings) || offered > 0) && live.ringsHere);
  presence.render(waiting.length);
  if (waiting.length && rings) {
    title.flash(waiting.length === 1 ? "📞 Incoming call" : `📞 ${waiting.length} incoming calls`);
    for (const call of waiting) {
      notifier.show(call.call_control_id, "Incoming call", `${callerName(call)} is calling`);
    }
  } else if (offered) {
    title.flash("📞 Transferred call");
  } else {
    title.stop();
  }
  if (!rings) notifier.keepOnly(new Set());
  showConnection(live.state);
  if (phone) phone.recheck();
}

function renderCards(calls) {
  const list = $("ringing");
  const wanted = new Set(calls.map((call) => call.call_control_id));
  for (const [id, card] of state.cards) {
    if (!wanted.has(id)) {
      card.remove();
      state.cards.delete(id);
    }
  }
  const ordered = calls.map((call) => {
    let card = state.cards.get(call.call_control_id);
    if (!card) {
      card = newCard(call.call_control_id);
      state.cards.set(call.call_control_id, card);
    }
    updateCard(card, call);
    showCallerContext(card, call, render);
    return card;
  });
  forgetCallerContexts(new Set(state.calls.keys()));
  // Move cards only when the order changed, so a focused button keeps its focus.
  const current = [...list.children];
  if (ordered.length !== current.length || ordered.some((card, i) => card !== current[i])) {
    list.replaceChildren(...ordered);
  }
}

/** A ringing call's card; transfer.js makes its "Transferred from" cards with it too. */
function newCard(id, { onAnswer = () => answer(id), onDecline = () => decline(id) } = {}) {
  const card = document.createElement("li");
  card.className = "card";
  card.dataset.callControlId = id;
  card.innerHTML = `
    <div class="who"></div>
    <div class="state"></div>
    <div class="meta"></div>
    <div class="actions">
      <button type="button" class="primary answer">Answer</button>
      <button type="button" class="decline">Decline</button>
    </div>
    <p class="error card-error" role="alert" hidden></p>`;
  card.querySelector(".answer").addEventListener("click", onAnswer);
  card.querySelector(".decline").addEventListener("click", onDecline);
  return card;
}

function updateCard(card, call) {
  const id = call.call_control_id;
  const name = callerName(call);
  const taken = state.leaving.has(id);
  const busy = state.busy.has(id) || (call.status === "answering" && isMine(call));
  card.dataset.state = taken ? "taken" : busy ? "busy" : "ringing";
  card.querySelector(".who").textContent = name;
  let status;
  if (taken) {
    status = takenText(call.claim_action, call.claimed_by);
  } else if (busy) {
    status = "Answering…";
  } else {
    status = `Ringing ${formatDuration(secondsSince(call.ringing_since))}`;
  }
  card.querySelector(".state").textContent = status;
  const number = knownName(call) ? `${formatPhone(call.from)} · ` : "";
  card.querySelector(".meta").textContent = `${number}called ${formatPhone(call.to)}`;
  card.querySelector(".actions").hidden = taken;
  for (const button of card.querySelectorAll(".actions button")) button.disabled = busy;
  card.querySelector(".answer").setAttribute("aria-label", `Answer call from ${name}`);
  card.querySelector(".decline").setAttribute("aria-label", `Decline call from ${name}`);
  const error = card.querySelector(".card-error");
  error.textContent = state.cardErrors.get(id) || "";
  error.hidden = !state.cardErrors.has(id);
}

function renderActive() {
  const call = state.activeId && state.calls.get(state.activeId);
  const panel = $("active");
  panel.hidden = !call;
  if (!call) {
    $("active-call").replaceChildren();
    return;
  }
  let box = $("active-call").firstElementChild;
  if (!box || box.dataset.callControlId !== call.call_control_id) {
    box = document.createElement("div");
    box.className = "active-call";
    box.dataset.callControlId = call.call_control_id;
    box.innerHTML = `
      <div class="who"></div>
      <div class="meta"></div>
      <div class="timer" role="timer" aria-live="off"></div>
      <div class="where muted"></div>
      <div class="actions">
        <button type="button" class="primary retry" hidden>Try again</button>
        <button type="button" class="danger hangup">Hang up</button>
      </div>
      <p class="error" role="alert" hidden></p>`;
    box.querySelector(".hangup").addEventListener("click", () => hangUp(call.call_control_id));
    box.querySelector(".retry").addEventListener("click", () => answer(call.call_control_id));
    $("active-call").replaceChildren(box);
  }
  box.querySelector(".who").textContent = callerName(call);
  box.querySelector(".meta").textContent = knownName(call) ? formatPhone(call.from) : "";
  box.querySelector(".timer").textContent =
    call.status === "answered" && call.answered_at
      ? `On call ${formatDuration(secondsSince(call.answered_at))}`
      : "Connecting…";
  const where = call.transferred_to || (state.config && state.config.sip_uri);
  let audio = where ? `Audio: ${where}` : "";
  if (phone) {
    audio = "Audio: this browser";
  } else if (state.config && state.config.webrtc.enabled) {
    audio = "Audio: another tab of this browser";
  }
  box.querySelector(".where").textContent = audio;
  const error = box.querySelector(".error");
  const failed = state.cardErrors.has(call.call_control_id);
  error.textContent = state.cardErrors.get(call.call_control_id) || "";
  error.hidden = !failed;
  const retry = box.querySelector(".retry");
  retry.hidden = !failed;
  retry.disabled = state.busy.has(call.call_control_id);
}

function showConnection(connection) {
  const element = $("connection");
  element.dataset.state = connection;
  element.dataset.role = live.role;
  $("connection-text").textContent = CONNECTION_LABELS[connection] || connection;
  $("connection-age").textContent = live.lastEventAt
    ? `· last event ${formatAge(secondsSince(live.lastEventAt))}`
    : "";
}

// ---- actions ------------------------------------------------------------------------------

async function act(id, action, body) {
  state.busy.add(id);
  state.cardErrors.delete(id);
  render();
  try {
    return await api(`/api/telnyx/calls/${encode(id)}/${action}`, { method: "POST", body });
  } finally {
    state.busy.delete(id);
  }
}

async function answer(id) {
  try {
    const reply = await act(id, "answer");
    const call = state.calls.get(id);
    if (call) {
      state.calls.set(id, {
        ...call,
        claimed_by: reply.agent,
        claim_action: "answer",
        transferred_to: reply.transferred_to,
        status: call.status === "ringing" ? "answering" : call.status,
      });
      state.activeId = id;
      announce(`You answered the call from ${callerName(call)}`);
    }
  } catch (failure) {
    actionFailed(id, failure);
  }
  render();
  const hangup = document.querySelector("#active .hangup");
  if (state.activeId === id && hangup) hangup.focus();
}

async function decline(id) {
  try {
    await act(id, "decline", { cause: "CALL_REJECTED" });
    const call = state.calls.get(id);
    if (call) announce(`You declined the call from ${callerName(call)}`);
  } catch (failure) {
    actionFailed(id, failure);
  }
  render();
}

function actionFailed(id, failure) {
  const call = state.calls.get(id);
  if (failure.status === 409 && failure.code === "call_taken" && call) {
    // Someone else won: the same as seeing their claim arrive, not an error.
    const winner = failure.details.claimed_by || { id: null, name: "another agent" };
    state.calls.set(id, { ...call, status: "answering", claimed_by: winner, claim_action: "answer" });
    takenBySomeoneElse(id, winner, "answer");
  } else if (failure.status === 404) {
    state.calls.delete(id);
    announce("That call has already ended");
  } else if (failure.status === 502 && failure.details.caller_waiting && call) {
    // Telnyx answered the caller but refused the transfer: the call stays with this agent.
    const status = call.status === "ringing" ? "answering" : call.status;
    state.calls.set(id, { ...call, status, claimed_by: state.me, claim_action: "answer" });
    state.activeId = id;
    state.cardErrors.set(id, failure.message);
  } else if (failure.status !== 401) {
    state.cardErrors.set(id, failure.message);
  }
}

async function hangUp(id) {
  const button = document.querySelector("#active .hangup");
  if (button) button.disabled = true;
  state.cardErrors.delete(id);
  if (phone) phone.hangup();
  try {
    const reply = await api(`/api/telnyx/calls/${encode(id)}/end`, { method: "POST" });
    if (reply.already_ended) {
      state.calls.delete(id);
      state.activeId = null;
      refreshHistory();
    }
  } catch (failure) {
    if (failure.status === 404) {
      state.calls.delete(id);
      state.activeId = null;
    } else if (failure.status !== 401) {
      state.cardErrors.set(id, failure.message);
    }
  } finally {
    if (button) button.disabled = false;
  }
  render();
}

async function simulateCall() {
  const result = $("simulate-result");
  result.textContent = "";
  try {
    const reply = await api("/api/dev/simulated-calls", { method: "POST", body: {} });
    result.textContent = `Calling from ${formatPhone(reply.from)}…`;
  } catch (failure) {
    result.textContent = failure.message;
  }
}

// ---- recent calls -------------------------------------------------------------------------

function historyRow(call) {
  const row = document.createElement("li");
  row.dataset.callControlId = call.call_control_id;
  row.dataset.outcome = call.outcome || "";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = knownName(call)
    ? `${knownName(call)} · ${formatPhone(call.from)}`
    : formatPhone(call.from);
  const outcome = document.createElement("span");
  outcome.className = "outcome";
  outcome.textContent = OUTCOME_LABELS[call.outcome] || call.outcome || "";
  const details = document.createElement("span");
  details.className = "details";
  const parts = [formatTime(call.started_at)];
  if (call.outcome === "answered") parts.push(formatDuration(call.duration));
  if (call.agent) parts.push(call.agent.name);
  if (call.transferred_from) parts.push(`transferred from ${call.transferred_from.name}`);
  details.textContent = parts.filter(Boolean).join(" · ");
  row.append(who, outcome, details);
  appendCallNote(row, call, state.me, knownName(call) || formatPhone(call.from));
  if (call.has_recording) {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "none";
    audio.src = `/api/calls/${encode(call.id)}/recording`;
    audio.setAttribute("aria-label", `Recording of the call from ${who.textContent}`);
    row.append(audio);
  }
  decorateVoicemailRow(row, call);
  return row;
}

function putHistoryRow(call, position) {
  const list = $("history");
  const row = historyRow(call);
  const old = state.historyRows.get(call.call_control_id);
  if (old) {
    // Keep a player that is in use; replace the row otherwise.
    const playing = old.querySelector("audio");
    if (playing && !playing.paused) return;
    old.replaceWith(row);
  } else if (position === "top") {
    list.prepend(row);
  } else {
    list.append(row);
  }
  state.historyRows.set(call.call_control_id, row);
  $("history-empty").hidden = true;
}

async function loadHistory() {
  const error = $("history-error");
  const cursor = state.historyCursor ? `&before=${encode(state.historyCursor)}` : "";
  try {
    const page = await api(`/api/calls?limit=${HISTORY_PAGE}${cursor}${historyFilterQuery()}`);
    for (const call of page.calls) putHistoryRow(call, "bottom");
    state.historyCursor = page.next_cursor;
    $("load-more").hidden = !page.next_cursor;
    $("history-empty").hidden = state.historyRows.size > 0;
    error.hidden = true;
  } catch (failure) {
    if (failure.status === 401) return;
    error.textContent = `Recent calls could not be loaded: ${failure.message}`;
    error.hidden = false;
  }
}

async function refreshHistory() {
  try {
    const page = await api(`/api/calls?limit=${HISTORY_PAGE}${historyFilterQuery()}`);
    for (const call of [...page.calls].reverse()) {
      putHistoryRow(call, "top");
    }
    if (state.historyCursor === null) {
      state.historyCursor = page.next_cursor;
      $("load-more").hidden = !page.next_cursor;
    }
  } catch {
    // the next event or refresh tries again
  }
}

async function refreshHistoryRow(id) {
  try {
    const reply = await api(`/api/calls/${encode(id)}`);
    if (matchesHistoryFilter(reply.call)) {
      putHistoryRow(reply.call, "top");
    } else {
      removeHistoryRow(id);
    }
  } catch {
    // not logged yet: call.ended's refresh will bring it
  }
}

function removeHistoryRow(id) {
  const row = state.historyRows.get(id);
  if (row) row.remove();
  state.historyRows.delete(id);
}

/** The history from its first page again (the disposition filter changed). */
function reloadHistory() {
  $("history").replaceChildren();
  state.historyRows.clear();
  state.historyCursor = null;
  $("load-more").hidden = true;
  loadHistory();
}

// ---- wiring -------------------------------------------------------------------------------

function showRingtone(ringtoneState) {
  document.body.dataset.ringtone = ringtoneState;
  const mute = $("mute");
  mute.textContent = ringtone.muted ? "Ringtone off" : "Ringtone on";
  mute.setAttribute("aria-pressed", String(ringtone.muted));
  $("sound-hint").hidden = ringtoneState !== "blocked";
}

function bindControls() {
  bindSignIn({ onSignedIn: signedIn, beforeSubmit: () => ringtone.unlock() });
  // The form is the only way in: Escape must not close it.
  $("sign-in").addEventListener("cancel", (event) => event.preventDefault());
  $("sign-out").addEventListener("click", signOut);
  $("mute").addEventListener("click", () => ringtone.toggleMute());
  $("load-more").addEventListener("click", loadHistory);
  $("simulate").addEventListener("click", simulateCall);
  initNotes({ onFilterChange: reloadHistory, say: announce });
  presence.bind();
  const notify = $("notify");
  notify.hidden = !notifier.canAsk;
  notify.addEventListener("click", async () => {
    await notifier.ask();
    notify.hidden = !notifier.canAsk;
  });
  for (const type of ["pointerdown", "keydown"]) {
    document.addEventListener(type, () => {
      ringtone.unlock();
      live.claimRinger(); // the tab the agent used last plays the ringtone
    });
  }
  ringtone.onChange = showRingtone;
  showRingtone(ringtone.state);
  setUnauthenticatedHandler(sessionExpired);
  // Timers on cards and the active call, and the time since the last event.
  setInterval(render, 1000);
}

async function boot() {
  bindControls();
  try {
    const { user } = await api("/api/auth/me");
    await signedIn(user);
  } catch (failure) {
    showSignIn(failure.status === 401 ? null : `The server could not be reached: ${failure.message}`);
  }
}

boot();
