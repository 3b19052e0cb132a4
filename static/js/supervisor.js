// The supervisor's live view: who is waiting and for how long, who is on which call, today's
// numbers and a chart of them. The numbers are the server's (GET /api/supervisor/summary,
// fetched again when an event says they changed); callers waiting follow the event stream
// itself, so a ring shows at once.
import { bindSignIn, showSignIn } from "./sign_in.js";
import { api, setUnauthenticatedHandler } from "./api.js";
import { drawHourChart } from "./chart.js";
import { formatAge, formatDuration, formatPhone, secondsSince } from "./format.js";
import { LiveEvents } from "./live.js";
import { PRESENCE_LABELS } from "./presence.js";

const $ = (id) => document.getElementById(id);
const SUMMARY_PATH = "/api/supervisor/summary";
// Events come in bursts (a hang-up is ended, presence and logged within a few ms): one request.
const SUMMARY_DELAY_MS = 300;
// A safety net for what no event announces (the team's day turning over at midnight).
const SUMMARY_REFRESH_MS = 60000;
// Events after which today's numbers, presence or who holds which call may have changed.
const SUMMARY_EVENTS = new Set([
  "snapshot",
  "reset",
  "call.claimed",
  "call.released",
  "call.answered",
  "call.ended",
  "call.logged",
  "call.transfer_ended",
  "agent.presence",
]);
const WAITING = new Set(["ringing", "answering"]);
const HOLDING = new Set(["answering", "answered"]);
const CONNECTION_LABELS = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};
const ROLE_LABELS = { agent: "Agent", supervisor: "Supervisor" };

const state = {
  me: null,
  summary: null,
  clockOffsetMs: 0, // the server's clock minus this browser's, from the summary's generated_at
  calls: null, // live calls by call_control_id, from the stream; null until its snapshot
  presence: new Map(), // agent id -> presence: whichever of the summary or an event is newer
};

const fetching = { timer: null, inFlight: false, again: false };

/**
 * The event stream, opened with ?watch=true: watching does not make the supervisor available
 * for calls. Not the softphone's shared stream (shared_stream.js): this page takes no calls,
 * so it needs no ringer and no leader tab. It resumes after an error like the softphone's.
 */
const live = new LiveEvents({
  url: "/api/telnyx/events?watch=true",
  onEvent: handleEvent,
  onStateChange: showConnection,
  canReconnect: sessionStillValid,
});

// ---- signing in and out -------------------------------------------------------------------

async function signedIn(user) {
  if (!state.me || state.me.id !== user.id) forget();
  state.me = user;
  $("agent-name").textContent = user.name;
  $("account").hidden = false;
  // The server decides who may watch: the summary answers 403 to an agent.
  clearTimeout(fetching.timer);
  fetching.timer = null;
  if (await fetchSummary()) live.start();
}

function forget() {
  live.stop({ forget: true });
  state.summary = null;
  state.calls = null;
  state.presence.clear();
  $("agent-rows").replaceChildren();
  $("floor").hidden = true;
  $("forbidden").hidden = true;
}

function sessionExpired() {
  if (state.me === null) return;
  live.stop();
  showSignIn("Your session has expired. Sign in again to carry on watching.");
}

async function sessionStillValid() {
  try {
    await api("/api/auth/me");
    return true;
  } catch (failure) {
    return failure.status !== 401; // a 401 has opened the sign-in form
  }
}

async function signOut() {
  try {
    await api("/api/auth/logout", { method: "POST" });
  } catch {
    // signed out already, or the server is down: the page forgets the session either way
  }
  forget();
  state.me = null;
  $("account").hidden = true;
  showSignIn("You have signed out.");
}

// ---- today's numbers ----------------------------------------------------------------------

/** Ask for the summary soon; never more than one request at a time. */
function wantSummary() {
  if (fetching.inFlight) {
    fetching.again = true;
  } else if (!fetching.timer) {
    fetching.timer = setTimeout(fetchSummary, SUMMARY_DELAY_MS);
  }
}

/** Fetch the summary now; true if this account may watch (a 403 shows why not). */
async function fetchSummary() {
  fetching.timer = null;
  fetching.inFlight = true;
  fetching.again = false;
  let allowed = true;
  try {
    tookSummary(await api(SUMMARY_PATH));
  } catch (failure) {
    allowed = summaryFailed(failure);
  } finally {
    fetching.inFlight = false;
  }
  if (fetching.again && allowed && state.me) wantSummary();
  return allowed;
}

function tookSummary(summary) {
  state.summary = summary;
  state.clockOffsetMs = Date.parse(summary.generated_at) - Date.now() || 0;
  for (const agent of summary.agents) state.presence.set(agent.id, agent.presence);
  $("summary-error").hidden = true;
  $("forbidden").hidden = true;
  $("floor").hidden = false;
  renderToday();
  drawHourChart($("hour-chart"), summary.hours);
  render();
}

function summaryFailed(failure) {
  if (failure.status === 403 && failure.code === "supervisors_only") {
    live.stop();
    $("floor").hidden = true;
    $("forbidden").hidden = false;
    return false;
  }
  if (failure.status === 401) return false; // the sign-in form is open
  const error = $("summary-error");
  error.textContent = `Today's numbers could not be loaded: ${failure.message}. They come back with the next call.`;
  error.hidden = false;
  $("floor").hidden = false;
  return true;
}

// ---- live events --------------------------------------------------------------------------

function handleEvent(type, data) {
  if (!data && type !== "reset") return;
  switch (type) {
    case "snapshot":
      state.calls = new Map((data.calls || []).map((call) => [call.call_control_id, call]));
      for (const agent of data.agents || []) state.presence.set(agent.id, agent.presence);
      break;
    case "call.ringing":
    case "call.answered":
      merge(data);
      break;
    case "call.claimed":
      merge({ call_control_id: data.call_control_id, status: "answering", claimed_by: data.agent });
      break;
    case "call.released":
      if (state.calls && state.calls.has(data.call_control_id)) {
        const call = state.calls.get(data.call_control_id);
        state.calls.set(data.call_control_id, { ...call, status: "ringing", claimed_by: null });
      }
      break;
    case "call.ended":
      if (state.calls) state.calls.delete(data.call_control_id);
      break;
    case "agent.presence":
      state.presence.set(data.agent.id, data.presence);
      break;
    default:
      break;
  }
  if (SUMMARY_EVENTS.has(type)) wantSummary();
  render();
}

function merge(data) {
  if (!state.calls) state.calls = new Map();
  const old = state.calls.get(data.call_control_id) || {};
  // Answer events do not name who took the call (their claimed_by is null); the claim did.
  state.calls.set(data.call_control_id, {
    ...old,
    ...data,
    claimed_by: data.claimed_by || old.claimed_by || null,
  });
}

// ---- rendering ----------------------------------------------------------------------------

/** Seconds since a server time, on the server's clock (this browser's may be off). */
function since(iso) {
  return secondsSince(iso, Date.now() + state.clockOffsetMs);
}

function callerLabel(call) {
  const name = call.caller_name;
  const named = name && !/^[+\d\s().-]+$/.test(name);
  return named ? `${name} · ${formatPhone(call.from)}` : formatPhone(call.from);
}

function presenceOf(agent) {
  return state.presence.get(agent.id) || agent.presence;
}

/**
 * Callers waiting and the oldest wait follow the stream once it has told (a ring shows at once);
 * calls in progress are the summary's, which tells an agent's call from voicemail's.
 */
function liveNumbers() {
  const numbers = state.summary ? state.summary.live : {};
  const live = {
    waiting: numbers.ringing || 0,
    oldest: numbers.oldest_ringing_since || null,
    inProgress: numbers.in_progress || 0,
    leavingVoicemail: numbers.leaving_voicemail || 0,
  };
  if (state.calls) {
    const waiting = [...state.calls.values()].filter((call) => WAITING.has(call.status));
    const starts = waiting.map((call) => call.ringing_since).filter(Boolean).sort();
    live.waiting = waiting.length;
    live.oldest = starts.length ? starts[0] : null;
  }
  return live;
}

function render() {
  const numbers = liveNumbers();
  $("waiting-now").textContent = numbers.waiting;
  const wait = numbers.oldest ? since(numbers.oldest) : 0;
  $("longest-wait").textContent = numbers.waiting
    ? `Longest wait ${formatDuration(wait)}`
    : "Nobody waiting";
  const limit = state.summary ? state.summary.service_level_seconds : Infinity;
  $("tile-waiting").dataset.alert = String(numbers.waiting > 0 && wait > limit);
  $("in-progress-now").textContent = numbers.inProgress;
  $("voicemail-now").textContent = numbers.leavingVoicemail
    ? `${numbers.leavingVoicemail} leaving voicemail`
    : "";
  renderAgents();
  showConnection(live.state);
}

function renderToday() {
  const { today, day, timezone, service_level_seconds: limit } = state.summary;
  $("today-day").textContent = `(${day}, ${timezone})`;
  for (const outcome of ["answered", "missed", "abandoned", "voicemail", "declined", "offered"]) {
    $(`${outcome}-today`).textContent = today[outcome];
  }
  $("offered-detail").lastChild.textContent = today.offered === 1 ? " call" : " calls";
  $("service-level").textContent =
    today.service_level === null ? "–" : `${Math.round(today.service_level * 100)}%`;
  $("service-level-detail").textContent =
    `${today.answered_within_service_level} of ${today.offered} answered within ${limit} s`;
  const asa = today.average_speed_of_answer_seconds;
  $("speed-of-answer").textContent = asa === null ? "–" : formatSeconds(asa);
  $("talk-average").textContent =
    today.average_talk_seconds === null
      ? "No calls answered yet"
      : `Average talk ${formatDuration(today.average_talk_seconds)}`;
}

function formatSeconds(seconds) {
  return seconds < 60 ? `${Math.round(seconds)} s` : formatDuration(seconds);
}

function renderAgents() {
  const agents = state.summary ? state.summary.agents : [];
  const body = $("agent-rows");
  const existing = new Map([...body.children].map((row) => [row.dataset.agentId, row]));
  const rows = agents.map((agent) => {
    const row = existing.get(agent.id) || newAgentRow(agent.id);
    updateAgentRow(row, agent);
    return row;
  });
  $("no-agents").hidden = rows.length > 0;
  const current = [...body.children];
  if (rows.length !== current.length || rows.some((row, i) => row !== current[i])) {
    body.replaceChildren(...rows);
  }
  const counts = { available: 0, away: 0, on_call: 0 };
  for (const agent of agents) counts[presenceOf(agent)] = (counts[presenceOf(agent)] || 0) + 1;
  $("available-now").textContent = counts.available;
  $("on-call-now").textContent = counts.on_call;
  $("away-now").textContent = counts.away;
}

function newAgentRow(id) {
  const row = document.createElement("tr");
  row.dataset.agentId = id;
  const cells = {
    name: document.createElement("th"),
    presence: document.createElement("td"),
    call: document.createElement("td"),
    handled: document.createElement("td"),
    talk: document.createElement("td"),
  };
  cells.name.scope = "row";
  cells.name.className = "agent-name";
  cells.name.append(document.createElement("span"), " ", document.createElement("span"));
  cells.name.firstChild.className = "name";
  cells.name.lastChild.className = "role-badge";
  cells.presence.className = "agent-presence";
  const dot = document.createElement("span");
  dot.className = "dot";
  dot.setAttribute("aria-hidden", "true");
  const label = document.createElement("span");
  label.className = "presence-label";
  cells.presence.append(dot, " ", label);
  cells.call.className = "current-call";
  cells.handled.className = "number handled";
  cells.talk.className = "number talk";
  row.append(...Object.values(cells));
  return row;
}

function durationSpan() {
  const span = document.createElement("span");
  span.className = "call-duration";
  return span;
}

/** The call an agent holds: the summary says which (it knows transfers); the stream says
 * at once when it ends, and when it was answered. */
function heldCall(agent) {
  const held = agent.current_call;
  if (!held) return null;
  if (!state.calls) return held;
  const call = state.calls.get(held.call_control_id);
  if (!call || !HOLDING.has(call.status)) return null;
  return { ...held, status: call.status, answered_at: call.answered_at || held.answered_at };
}

function updateAgentRow(row, agent) {
  const presence = presenceOf(agent);
  row.dataset.presence = presence;
  row.dataset.role = agent.role;
  row.querySelector(".name").textContent = agent.name;
  row.querySelector(".role-badge").textContent = ROLE_LABELS[agent.role] || agent.role;
  row.querySelector(".presence-label").textContent = PRESENCE_LABELS[presence] || presence;
  const call = heldCall(agent);
  const cell = row.querySelector(".current-call");
  cell.dataset.callControlId = call ? call.call_control_id : "";
  if (call) {
    const duration =
      call.status === "answered" && call.answered_at
        ? formatDuration(since(call.answered_at))
        : "connecting…";
    const caller = `${callerLabel(call)} · `;
    if (cell.childElementCount === 0) cell.replaceChildren(caller, durationSpan());
    cell.firstChild.textContent = caller;
    cell.lastChild.textContent = duration;
  } else if (cell.textContent !== "—") {
    cell.textContent = "—";
  }
  row.querySelector(".handled").textContent = agent.handled_today;
  row.querySelector(".talk").textContent = formatDuration(agent.talk_seconds_today);
}

function showConnection(connection) {
  const element = $("connection");
  element.dataset.state = connection;
  $("connection-text").textContent = CONNECTION_LABELS[connection] || connection;
  $("connection-age").textContent = live.lastEventAt
    ? `· last event ${formatAge(secondsSince(live.lastEventAt))}`
    : "";
}

// ---- wiring -------------------------------------------------------------------------------

async function boot() {
  bindSignIn({ onSignedIn: signedIn });
  $("sign-in").addEventListener("cancel", (event) => event.preventDefault());
  $("sign-out").addEventListener("click", signOut);
  setUnauthenticatedHandler(sessionExpired);
  // The waits and call durations tick; the time since the last event too.
  setInterval(render, 1000);
  setInterval(() => {
    if (state.me && !$("floor").hidden) wantSummary();
  }, SUMMARY_REFRESH_MS);
  try {
    const { user } = await api("/api/auth/me");
    await signedIn(user);
  } catch (failure) {
    showSignIn(failure.status === 401 ? null : `The server could not be reached: ${failure.message}`);
  }
}

boot();
