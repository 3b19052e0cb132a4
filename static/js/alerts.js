// Getting an agent's attention: a ringtone made with Web Audio, desktop notifications when the
// tab is hidden, and a flashing tab title.

const MUTE_KEY = "telnyx-flask.ringtone-muted";
// North American ring: 440 + 480 Hz, 2 s on, 4 s off.
const TONES_HZ = [440, 480];
const RING_ON_S = 2;
const RING_PERIOD_MS = 6000;

export class Ringtone {
  constructor(storage = window.localStorage) {
    this.storage = storage;
    this.muted = storage.getItem(MUTE_KEY) === "1";
    this.context = null;
    this.wanted = false;
    this.timer = null;
    this.onChange = () => {};
    // Muted or unmuted in another tab: follow it, since this tab may be the one that rings next.
    window.addEventListener("storage", (event) => {
      if (event.storageArea !== storage || (event.key !== MUTE_KEY && event.key !== null)) return;
      this.muted = storage.getItem(MUTE_KEY) === "1";
      this.update();
    });
  }

  /** Create or resume the AudioContext; browsers allow this only during a click or key press. */
  unlock() {
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    if (!AudioContextClass) return;
    if (!this.context) this.context = new AudioContextClass();
    if (this.context.state === "suspended") {
      this.context.resume().then(() => this.update(), () => {});
    }
    this.update();
  }

  /** "off", "playing", "muted" or "blocked" (ringing, but the browser has not allowed sound). */
  get state() {
    if (!this.wanted) return "off";
    if (this.muted) return "muted";
    if (!this.context || this.context.state !== "running") return "blocked";
    return "playing";
  }

  ring(on) {
    this.wanted = on;
    this.update();
  }

  toggleMute() {
    this.muted = !this.muted;
    this.storage.setItem(MUTE_KEY, this.muted ? "1" : "0");
    this.update();
  }

  update() {
    const playing = this.state === "playing";
    if (playing && !this.timer) {
      this.burst();
      this.timer = setInterval(() => this.burst(), RING_PERIOD_MS);
    } else if (!playing && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
      this.silence();
    }
    this.onChange(this.state);
  }

  burst() {
    const context = this.context;
    const start = context.currentTime + 0.01;
    const gain = context.createGain();
    gain.gain.setValueAtTime(0, start);
    gain.gain.linearRampToValueAtTime(0.12, start + 0.03);
    gain.gain.setValueAtTime(0.12, start + RING_ON_S - 0.03);
    gain.gain.linearRampToValueAtTime(0, start + RING_ON_S);
    gain.connect(context.destination);
    this.voices = TONES_HZ.map((hz) => {
      const oscillator = context.createOscillator();
      oscillator.frequency.value = hz;
      oscillator.connect(gain);
      oscillator.start(start);
      oscillator.stop(start + RING_ON_S);
      return oscillator;
    });
  }

  silence() {
    for (const oscillator of this.voices || []) {
      try {
        oscillator.stop();
      } catch {
        // already stopped
      }
    }
    this.voices = [];
  }
}

/** Desktop notifications, only while the tab is hidden, one per ringing call. */
export class Notifier {
  constructor() {
    this.open = new Map();
  }

  get supported() {
    return "Notification" in window;
  }

  /** True until the agent has been asked once (the browser remembers the answer). */
  get canAsk() {
    return this.supported && Notification.permission === "default";
  }

  /** Ask for permission; must run inside a click handler. */
  async ask() {
    if (this.canAsk) await Notification.requestPermission();
  }

  show(callControlId, title, body) {
    if (!this.supported || Notification.permission !== "granted" || !document.hidden) return;
    if (this.open.has(callControlId)) return;
    const notification = new Notification(title, { body, tag: callControlId, requireInteraction: true });
    notification.onclick = () => {
      window.focus();
      notification.close();
    };
    this.open.set(callControlId, notification);
  }

  close(callControlId) {
    const notification = this.open.get(callControlId);
    if (notification) notification.close();
    this.open.delete(callControlId);
  }

  /** Close every notification but those of these calls (a snapshot replaced what was known). */
  keepOnly(callControlIds) {
    for (const id of [...this.open.keys()]) {
      if (!callControlIds.has(id)) this.close(id);
    }
  }
}

/** Alternates the tab title while calls ring. */
export class TitleFlasher {
  constructor(baseTitle = document.title) {
    this.baseTitle = baseTitle;
    this.timer = null;
    this.message = null;
  }

  flash(message) {
    this.message = message;
    if (this.timer) return;
    let on = true;
    document.title = this.message;
    this.timer = setInterval(() => {
      on = !on;
      document.title = on ? this.message : this.baseTitle;
    }, 1000);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
    document.title = this.baseTitle;
  }
}
