// In-browser audio with the Telnyx WebRTC SDK (the pinned @telnyx/webrtc the server serves).
// The page signs in with a login token the server mints; the SIP password never reaches it.

const RECONNECT_MS = 5000;

export class BrowserPhone {
  /**
   * sdkUrl: the SDK module; fetchToken(): a fresh login token; audio: the <audio> element;
   * shouldAnswer(call): whether an incoming leg is the call this agent just took;
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
    this.stopped = false;
    this.retryTimer = null;
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
    let token;
    try {
      token = await this.fetchToken();
    } catch (error) {
      this.onStatus("error", error.message);
      return;
    }
    if (this.stopped) return;
    const client = new TelnyxRTC({ login_token: token });
    this.client = client;
    client.remoteElement = this.audio;
    client.on("telnyx.ready", () => this.onStatus("ready"));
    client.on("telnyx.error", (error) => this.failed(client, error));
    client.on("telnyx.socket.close", () => this.failed(client, null));
    client.on("telnyx.notification", (notification) => this.notified(notification));
    client.connect();
  }

  notified(notification) {
    if (notification.type !== "callUpdate") return;
    const call = notification.call;
    if (call.state === "ringing" && !this.call) {
      if (this.shouldAnswer(call)) {
        this.call = call;
        call.answer();
      }
      return;
    }
    if (call !== this.call) return;
    if (call.state === "active") this.onStatus("in-call");
    if (call.state === "hangup" || call.state === "destroy") {
      this.call = null;
      this.onStatus("ready");
    }
  }

  failed(client, error) {
    if (client !== this.client || this.stopped) return;
    const detail = error && (error.message || (error.error && error.error.message));
    this.onStatus("error", detail || "the connection to Telnyx closed");
    this.client = null;
    this.call = null;
    try {
      client.disconnect();
    } catch {
      // already closed
    }
    // A fresh token each time: the old one may be what expired.
    this.retryTimer = setTimeout(() => this.start(), RECONNECT_MS);
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
    if (this.client) this.client.disconnect();
    this.client = null;
  }
}
