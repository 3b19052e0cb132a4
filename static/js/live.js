// The live event stream: one EventSource, its connection state, and resuming where it left off.

export const EVENT_TYPES = [
  "snapshot",
  "reset",
  "call.ringing",
  "call.claimed",
  "call.released",
  "call.answered",
  "call.ended",
  "call.recording",
  "call.logged",
  // The agents' floor: presence, transfers to a colleague, after-call notes, voicemail.
  "agent.presence",
  "call.transfer_offered",
  "call.transfer_ended",
  "call.noted",
  "voicemail.heard",
];

const MAX_BACKOFF_MS = 30000;

/**
 * Keeps /api/telnyx/events open (in one tab per browser: shared_stream.js shares its events). The browser's own reconnects carry Last-Event-ID; when it gives
 * up (an HTTP error such as 401 or 502 closes an EventSource for good), this reopens it with
 * ?last_event_id= after a backoff, once `canReconnect()` agrees.
 */
export class LiveEvents {
  constructor({ url, onEvent, onStateChange, canReconnect }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onStateChange = onStateChange;
    this.canReconnect = canReconnect;
    this.source = null;
    this.lastEventId = null;
    this.lastEventAt = null;
    this.state = "offline";
    this.failures = 0;
    this.retryTimer = null;
  }

  start() {
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    const url = this.lastEventId
      ? `${this.url}${this.url.includes("?") ? "&" : "?"}last_event_id=${encodeURIComponent(this.lastEventId)}`
      : this.url;
    const source = new EventSource(url);
    this.source = source;
    this.setState(this.lastEventAt ? "reconnecting" : "connecting");
    source.onopen = () => {
      this.failures = 0;
      this.setState("live");
    };
    source.onerror = () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CLOSED) {
        this.scheduleReopen();
      } else {
        this.setState("reconnecting");
      }
    };
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (message) => this.receive(type, message));
    }
  }

  receive(type, message) {
    if (message.lastEventId) this.lastEventId = message.lastEventId;
    this.lastEventAt = Date.now();
    let data = null;
    try {
      data = message.data ? JSON.parse(message.data) : null;
    } catch {
      return; // not JSON: nothing this page can act on
    }
    // The stream id too: tabs that share this stream drop what they have already seen by it.
    this.onEvent(type, data, message.lastEventId);
  }

  async scheduleReopen() {
    const source = this.source;
    source.close();
    this.failures += 1;
    const allowed = await this.canReconnect();
    // Stopped (signed out, or another tab holds the stream now) or restarted meanwhile.
    if (source !== this.source) return;
    if (!allowed) {
      this.setState("offline");
      return;
    }
    this.setState("reconnecting");
    const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.min(this.failures - 1, 5));
    this.retryTimer = setTimeout(() => this.start(), delay * (0.75 + Math.random() / 2));
  }

  /** Close the stream; `forget` also drops the resume point (another agent signs in). */
  stop({ forget = false } = {}) {
    clearTimeout(this.retryTimer);
    if (this.source) this.source.close();
    this.source = null;
    if (forget) {
      this.lastEventId = null;
      this.lastEventAt = null;
    }
    this.setState("offline");
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onStateChange(state);
  }
}
