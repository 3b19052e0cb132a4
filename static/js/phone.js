// In-browser audio with the Telnyx WebRTC SDK (the pinned @telnyx/webrtc the server serves).
// The page signs in with a login token the server mints; the SIP password never reaches it.

const RECONNECT_MS = 5000;
// Each retry mints a token (a Telnyx API call, limited per agent): back off while it fails.
const MAX_RECONNECT_MS = 300000;

/**
 * The value of a SIP header an incoming leg carries (Telnyx's custom_headers on the transfer,
 * which the SDK puts in call.options.customHeaders), or null. Header names ignore case.
 */
export function sipHeader(call, name) {
  const headers = (call.options && call.options.customHeaders) || [];
  const wanted = name.toLowerCase();
  const found = headers.find(
    (header) => header && typeof header.name === "string" && header.name.toLowerCase() === wanted,
  );
  return found && typeof found.value === "string" ? found.value : null;
}

export class BrowserPhone {
  /**
   * sdkUrl: the SDK module; fetchToken(): a fresh login token; audio: the <audio> element;
   * shouldAnswer(call): whether an incoming leg is the call this agent took (asked again by
   * recheck() for legs still ringing, when the page learns of a call taken after they rang);
   * onStatus(status, detail): "connecting", "ready", "in-call", "error".
   */
  constructor({ sdkUrl, fetchToken, audio, shouldAnswer, onStatus }) {
    this.sdkUrl = sdkUrl;
    this.fetchToken = fetchToken;
    this.audio = audio;
    this.shouldAnswer = shouldAnswer;
    this.onStatus = onStatus;
    this.client = null;
    this.call = null;
    this.ringing = new Set(); // incoming legs not (yet) known to be this agent's
    this.stopped = false;
    this.retryTimer = null;
    this.failures = 0;
  }

  async start() {
    this.stopped = false;
    this.onStatus("connecting");
    let TelnyxRTC;
    try {
      ({ TelnyxRTC } = await import(this.sdkUrl));
    } catch (error) {
      this.onStatus("error", `the WebRTC SDK did not load (${error.message})`);
      return;
    }
    if (this.stopped) return; // stopped while the SDK loaded: mint no token
    let token;
    try {
      token = await this.fetchToken();
    } catch (error) {
      this.onStatus("error", error.message);
      // 401: the page asks the agent to sign in again, and starts the phone afresh.
      if (error.status !== 401 && !this.stopped) {
        this.retryLater(error.details && error.details.retry_after);
      }
      return;
    }
    if (this.stopped) return;
    const client = new TelnyxRTC({ login_token: token });
    this.client = client;
    client.remoteElement = this.audio;
    // A stopped phone's client may still report: only the current client is heard.
    client.on("telnyx.ready", () => {
      if (client !== this.client) return;
      this.failures = 0;
      this.onStatus("ready");
    });
    client.on("telnyx.error", (error) => this.failed(client, error));
    client.on("telnyx.socket.close", () => this.failed(client, null));
    client.on("telnyx.notification", (notification) => {
      if (client === this.client) this.notified(notification);
    });
    client.connect();
  }

  notified(notification) {
    if (notification.type !== "callUpdate") return;
    const call = notification.call;
    if (call.state === "ringing" && !this.call) {
      // With a credential other agents share, every page is rung with every agent's calls:
      // a leg is answered only once it is known to carry the call this agent took.
      this.ringing.add(call);
      this.recheck();
      return;
    }
    if (call.state === "hangup" || call.state === "destroy") this.ringing.delete(call);
    if (call !== this.call) return;
    if (call.state === "active") this.onStatus("in-call");
    if (call.state === "hangup" || call.state === "destroy") {
      this.call = null;
      this.onStatus("ready");
    }
  }

  /** Answer a leg still ringing that is now known to be this agent's call. */
  recheck() {
    if (this.call) return;
    for (const call of this.ringing) {
      if (call.state !== "ringing") {
        this.ringing.delete(call);
      } else if (this.shouldAnswer(call)) {
        this.ringing.delete(call);
        this.call = call;
        call.answer();
        return;
      }
    }
  }

  failed(client, error) {
    if (client !== this.client || this.stopped) return;
    const detail = error && (error.message || (error.error && error.error.message));
    this.onStatus("error", detail || "the connection to Telnyx closed");
    this.client = null;
    this.call = null;
    this.ringing.clear();
    try {
      client.disconnect();
    } catch {
      // already closed
    }
    // A fresh token each time: the old one may be what expired.
    this.retryLater();
  }

  /** Start again after `seconds` (the server's Retry-After), or a backoff that grows. */
  retryLater(seconds) {
    this.failures += 1;
    const backoff = Math.min(MAX_RECONNECT_MS, RECONNECT_MS * 2 ** Math.min(this.failures - 1, 6));
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.start(), seconds ? seconds * 1000 : backoff);
  }

  /** End the browser's leg of the current call, if there is one. */
  hangup() {
    if (this.call) {
      this.call.hangup();
      this.call = null;
    }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.hangup();
    this.ringing.clear();
    if (this.client) this.client.disconnect();
    this.client = null;
  }
}
