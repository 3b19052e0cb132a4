// After the call: the form (disposition + note) on the page of the agent who had the call, the
// note and disposition on history rows, and the history's disposition filter.
import { api } from "./api.js";
import { formatPhone } from "./format.js";

const $ = (id) => document.getElementById(id);
const forms = new Map(); // call_control_id -> <form>
let settings = { dispositions: [], noteMaxChars: 2000 };
let announce = () => {};
let formCount = 0;

/** Wire the history filter; `onFilterChange` reloads the history, `say` reads text aloud. */
export function initNotes({ onFilterChange, say }) {
  announce = say;
  $("history-disposition").addEventListener("change", onFilterChange);
}

/** The choices and the note limit from GET /api/softphone/config. */
export function applyNotesConfig(config) {
  settings = {
    dispositions: (config && config.dispositions) || [],
    noteMaxChars: (config && config.note_max_chars) || 2000,
  };
  const filter = $("history-disposition");
  const chosen = filter.value;
  filter.replaceChildren(option("", "All"), ...settings.dispositions.map((d) => option(d, d)));
  filter.value = settings.dispositions.includes(chosen) ? chosen : "";
  $("history-filter").hidden = settings.dispositions.length === 0;
}

/** The query-string part for the chosen disposition filter ("" for all calls). */
export function historyFilterQuery() {
  const value = $("history-disposition").value;
  return value ? `&disposition=${encodeURIComponent(value)}` : "";
}

/** Whether a call belongs in the history as it is filtered now. */
export function matchesHistoryFilter(call) {
  const value = $("history-disposition").value;
  return !value || call.disposition === value;
}

/** Drop every form (sign-out, another agent signing in). */
export function forgetAfterCallForms() {
  forms.clear();
  $("after-call-forms").replaceChildren();
  $("after-call").hidden = true;
}

function option(value, label) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = label;
  return element;
}

/** Offer the after-call form for a call this agent had and that has ended; a call from the
 * history brings its saved note and disposition, which a save replaces. */
export function offerAfterCallForm(call, callerName) {
  const id = call.call_control_id;
  if (forms.has(id)) return;
  const n = ++formCount;
  const form = document.createElement("form");
  form.className = "after-call-form";
  form.dataset.callControlId = id;
  form.setAttribute("aria-label", `Note for the call with ${callerName}`);
  form.innerHTML = `
    <p class="who"></p>
    <label for="disposition-${n}">Disposition</label>
    <select id="disposition-${n}" name="disposition"></select>
    <label for="note-${n}">Note</label>
    <textarea id="note-${n}" name="note" rows="3" aria-describedby="note-count-${n}"></textarea>
    <p id="note-count-${n}" class="note-count muted"></p>
    <p class="error" role="alert" hidden></p>
    <div class="actions">
      <button type="submit" class="primary">Save</button>
      <button type="button" class="dismiss">Not now</button>
    </div>`;
  const number = call.from ? ` · ${formatPhone(call.from)}` : "";
  form.querySelector(".who").textContent = `Call with ${callerName}${number}`;
  const select = form.querySelector("select");
  select.append(option("", "No disposition"), ...settings.dispositions.map((d) => option(d, d)));
  if (call.disposition && settings.dispositions.includes(call.disposition)) {
    select.value = call.disposition;
  }
  const note = form.querySelector("textarea");
  note.maxLength = settings.noteMaxChars;
  note.value = call.note || "";
  const count = () => {
    form.querySelector(".note-count").textContent =
      `${note.value.length} / ${settings.noteMaxChars} characters`;
  };
  note.addEventListener("input", count);
  count();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    save(id, form);
  });
  form.querySelector(".dismiss").addEventListener("click", () => remove(id));
  forms.set(id, form);
  $("after-call-forms").prepend(form);
  $("after-call").hidden = false;
  return form;
}

function remove(id) {
  const form = forms.get(id);
  if (form) form.remove();
  forms.delete(id);
  $("after-call").hidden = forms.size === 0;
}

async function save(id, form) {
  const error = form.querySelector(".error");
  const text = form.querySelector("textarea").value.trim();
  const disposition = form.querySelector("select").value;
  if (!text && !disposition) {
    error.textContent = "Pick a disposition or write a note.";
    error.hidden = false;
    return;
  }
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api(`/api/calls/${encodeURIComponent(id)}/notes`, {
      method: "PUT",
      body: { note: text || null, disposition: disposition || null },
    });
    remove(id);
    announce("Note saved");
  } catch (failure) {
    if (failure.status === 401) return;
    error.textContent = `Not saved: ${failure.message}`;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

/** Add the call's disposition and note to its history row, and for the agent who had the call,
 * a button to add or change them. */
export function appendCallNote(row, call, me, callerName) {
  if (call.disposition || call.note) row.append(noteBox(call));
  if (!me || !call.agent || call.agent.id !== me.id) return;
  const edit = document.createElement("button");
  edit.type = "button";
  edit.className = "edit-note";
  edit.textContent = call.disposition || call.note ? "Edit note" : "Add note";
  edit.setAttribute("aria-label", `${edit.textContent} for the call with ${callerName}`);
  edit.addEventListener("click", () => {
    const form = forms.get(call.call_control_id) || offerAfterCallForm(call, callerName);
    form.querySelector("select").focus();
  });
  row.append(edit);
}

function noteBox(call) {
  const box = document.createElement("p");
  box.className = "call-note";
  if (call.disposition) {
    const badge = document.createElement("span");
    badge.className = "disposition";
    badge.textContent = call.disposition;
    box.append(badge);
  }
  if (call.note) {
    const text = document.createElement("span");
    text.className = "note-text";
    text.textContent = call.note;
    box.append(text);
  }
  if (call.noted_by) {
    const by = document.createElement("span");
    by.className = "muted";
    by.textContent = `— ${call.noted_by.name}`;
    box.append(by);
  }
  return box;
}
