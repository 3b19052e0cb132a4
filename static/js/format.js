// Numbers, durations and times as people read them.

/** "+13125550147" -> "+1 (312) 555-0147"; other numbers stay in E.164. */
export function formatPhone(number) {
  if (!number) return "Unknown number";
  const nanp = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(number);
  if (nanp) return `+1 (${nanp[1]}) ${nanp[2]}-${nanp[3]}`;
  return number;
}

/** Seconds as m:ss, or h:mm:ss from an hour up. */
export function formatDuration(totalSeconds) {
  const seconds = Math.max(0, Math.floor(totalSeconds || 0));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = String(seconds % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** How long ago, in words: "just now", "40 s ago", "3 min ago", "2 h ago". */
export function formatAge(seconds) {
  if (seconds < 5) return "just now";
  if (seconds < 60) return `${Math.floor(seconds)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

/** Seconds since an ISO time (or a millisecond clock value), never negative. */
export function secondsSince(value, now = Date.now()) {
  const start = typeof value === "number" ? value : Date.parse(value);
  return Number.isNaN(start) ? 0 : Math.max(0, (now - start) / 1000);
}

/** A time today as "14:05"; an older one with its date. */
export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const time = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

export const OUTCOME_LABELS = {
  answered: "Answered",
  missed: "Missed",
  abandoned: "Caller hung up",
  declined: "Declined",
  voicemail: "Voicemail",
};
