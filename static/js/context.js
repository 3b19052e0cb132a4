// The caller's context on a ringing card: the prospect (name, company, import notes) and the
// number's history (calls before, the last one, the last note), fetched once per call.
import { api } from "./api.js";
import { OUTCOME_LABELS, formatTime } from "./format.js";

const contexts = new Map(); // call_control_id -> {status: "loading"|"ready"|"failed", context}

/** Show the caller context on a ringing card; the first call for a call fetches it. */
export function showCallerContext(card, call, onLoaded) {
  const id = call.call_control_id;
  let entry = contexts.get(id);
  if (!entry) {
    entry = { status: "loading", context: null };
    contexts.set(id, entry);
    fetchContext(id, entry, onLoaded);
  }
  let box = card.querySelector(".caller-context");
  if (!box) {
    box = document.createElement("div");
    box.className = "caller-context";
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "About this caller");
    card.querySelector(".actions").before(box);
  }
  // The card is redrawn every second: rebuild the box only when what it shows changed.
  if (box.dataset.status === entry.status) return;
  box.dataset.status = entry.status;
  box.replaceChildren(...contextLines(entry));
}

/** Forget the context of calls no longer on screen. */
export function forgetCallerContexts(keep) {
  for (const id of contexts.keys()) {
    if (!keep.has(id)) contexts.delete(id);
  }
}

async function fetchContext(id, entry, onLoaded) {
  try {
    const reply = await api(`/api/telnyx/calls/${encodeURIComponent(id)}/context`);
    entry.context = reply.context;
    entry.status = "ready";
  } catch {
    // The card still rings without it; a 401 is the page's business.
    entry.status = "failed";
  }
  onLoaded();
}

function line(className, text) {
  const element = document.createElement("p");
  element.className = className;
  element.textContent = text;
  return element;
}

function contextLines(entry) {
  if (entry.status === "loading") return [line("context-loading muted", "Looking up this caller…")];
  if (entry.status === "failed") return [line("muted", "Caller history unavailable.")];
  const { prospect, history } = entry.context;
  const lines = [];
  if (prospect && prospect.company) lines.push(line("context-company", prospect.company));
  if (prospect && prospect.notes) lines.push(line("context-prospect-notes", prospect.notes));
  lines.push(line("context-history", historyText(history)));
  if (history.last_note) lines.push(line("context-last-note", noteText(history.last_note)));
  return lines;
}

/** "3 calls before · last Dec 2 14:05, Answered by Alice" ("1000+ calls" past the cap), or
 * "First call from this number". */
export function historyText(history) {
  const count = history.calls_before;
  if (!count || !history.last_call) return "First call from this number";
  const last = history.last_call;
  const outcome = OUTCOME_LABELS[last.outcome] || last.outcome || "";
  const by = last.agent ? ` by ${last.agent.name}` : "";
  const plural = count === 1 && !history.calls_before_capped ? "call" : "calls";
  const more = history.calls_before_capped ? "+" : "";
  return `${count}${more} ${plural} before · last ${formatTime(last.started_at)}, ${outcome}${by}`;
}

/** "Last note (sale, Bob): bought two". */
export function noteText(note) {
  const about = [note.disposition, note.by && note.by.name].filter(Boolean).join(", ");
  const label = about ? `Last note (${about})` : "Last note";
  return note.note ? `${label}: ${note.note}` : label;
}
