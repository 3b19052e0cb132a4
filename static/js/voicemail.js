// Voicemail on the page: a voicemail in the history carries an "Unheard" badge until somebody
// plays its message to the end (the player's `ended` marks it heard, for every page), and the
// header counts the unheard ones.
import { api } from "./api.js";
import { formatDuration } from "./format.js";

const encode = encodeURIComponent;
// Events after which the count may have changed: a voicemail ended or its message was saved,
// one was heard, or the page (re)connected and may have missed any of those.
const COUNT_CHANGES = new Set(["snapshot", "reset", "call.ended", "call.recording", "voicemail.heard"]);

let signedIn = false;
let counting = null; // the count request in flight; a change meanwhile asks again after it
let countAgain = false;

function rowsOf(callControlId) {
  return document.querySelectorAll(
    `#history li[data-call-control-id="${CSS.escape(callControlId)}"]`,
  );
}

function showHeard(row, heardBy) {
  row.dataset.heard = "true";
  for (const badge of row.querySelectorAll(".unheard-badge")) badge.remove();
  const details = row.querySelector(".details");
  if (details && heardBy && !row.querySelector(".heard-by")) {
    const by = document.createElement("span");
    by.className = "heard-by";
    by.textContent = ` · heard by ${heardBy.name}`;
    details.append(by);
  }
}

async function markHeard(call, row, player) {
  try {
    const heard = await api(`/api/calls/${encode(call.id)}/heard`, { method: "POST" });
    for (const each of rowsOf(call.call_control_id)) showHeard(each, heard.heard_by);
    refreshUnheard();
  } catch {
    // Not marked (the server is unreachable, say): the next play to the end tries again.
    player.addEventListener("ended", () => markHeard(call, row, player), { once: true });
  }
}

/** Give a history row of a voicemail its badge, and its player the mark of having been heard. */
export function decorateVoicemailRow(row, call) {
  if (call.outcome !== "voicemail") return;
  row.classList.add("voicemail");
  const details = row.querySelector(".details");
  const player = row.querySelector("audio");
  if (!call.has_recording || !player) {
    if (details) details.append(" · no message");
    return;
  }
  player.setAttribute("aria-label", player.getAttribute("aria-label").replace("Recording", "Voicemail"));
  // How long the caller was on: the greeting and the message.
  if (details && call.duration) details.append(` · ${formatDuration(call.duration)}`);
  if (call.heard_at) {
    showHeard(row, call.heard_by);
    return;
  }
  row.dataset.heard = "false";
  const badge = document.createElement("span");
  badge.className = "unheard-badge";
  badge.textContent = "Unheard";
  if (details) details.prepend(badge, " ");
  player.addEventListener("ended", () => markHeard(call, row, player), { once: true });
}

function showCount(count) {
  const element = document.getElementById("unheard-voicemails");
  if (!element) return;
  element.hidden = !count;
  element.textContent = count === 1 ? "1 unheard voicemail" : `${count} unheard voicemails`;
  element.dataset.count = String(count);
}

/** Ask the server how many voicemails are unheard, and show it in the header. */
export async function refreshUnheard() {
  if (!signedIn) return;
  if (counting) {
    countAgain = true;
    return;
  }
  counting = api("/api/voicemails/unheard");
  try {
    const reply = await counting;
    if (signedIn) showCount(reply.count);
  } catch {
    // the next event that changes it asks again
  } finally {
    counting = null;
    if (countAgain) {
      countAgain = false;
      refreshUnheard();
    }
  }
}

/** A live event: badges of heard voicemails go on every page, and the count follows. */
export function voicemailEvent(type, data) {
  signedIn = true;
  if (type === "voicemail.heard" && data) {
    for (const row of rowsOf(data.call_control_id)) showHeard(row, data.heard_by);
  }
  if (COUNT_CHANGES.has(type)) refreshUnheard();
}

/** The agent signed out: the count goes with them. */
export function forgetVoicemail() {
  signedIn = false;
  showCount(0);
}
