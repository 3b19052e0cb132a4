// Many tabs, one connection: the tabs of one signed-in agent share a single event stream.
//
// A browser opens at most 6 connections per host over HTTP/1.1, and every tab held an
// EventSource, so the 7th tab never rang. Now the tabs elect a leader with a Web Lock (held for
// the leader's life; the browser hands it to the next waiting tab the moment the leader's tab
// closes). The leader holds the one EventSource (live.js) and rebroadcasts every event, with its
// stream id, over a BroadcastChannel; the other tabs feed those into the same callbacks. A new
// tab is replayed the last snapshot and the events since; a new leader resumes the stream from
// the last id it saw, so a hand-over loses nothing, and every tab drops what it has seen by id.
// Without BroadcastChannel or Web Locks (Web Locks need a secure context: https or localhost),
// each tab keeps a private EventSource, as before.
import { LiveEvents } from "./live.js";

// Versioned: after a deploy that changes the messages, old and new tabs keep to their own.
const NAME_PREFIX = "telnyx-flask.live.v1";
// Sign-in and sign-out, told to every tab of this origin whoever is signed in there.
const SESSION_CHANNEL = "telnyx-flask.session.v1";
// A tab that joins is replayed at most this many events after the snapshot; past it, the
// leader takes a fresh snapshot instead, so memory stays small and a new tab starts fast.
const REPLAY_LIMIT = 50;

/** True when this browser can share a stream between tabs. */
function canShare() {
  return (
    typeof BroadcastChannel === "function" &&
    Boolean(navigator.locks && typeof navigator.locks.request === "function")
  );
}

/** A Redis stream id ("1700000000000-0") as a comparable pair, or null. */
function streamKey(id) {
  const match = /^(\d+)-(\d+)$/.exec(id || "");
  return match ? [Number(match[1]), Number(match[2])] : null;
}

function isAfter(key, other) {
  return key[0] > other[0] || (key[0] === other[0] && key[1] > other[1]);
}

/**
 * LiveEvents' interface (start, stop, state, lastEventAt), shared by the tabs of one browser.
 * `role` is "leader" (holds the stream), "follower", "private" (no sharing here) or "none";
 * `ringsHere` says whether this tab is the one that plays the ringtone.
 */
export class SharedLiveEvents {
  constructor({
    url,
    onEvent,
    onStateChange,
    canReconnect,
    agentId,
    onRingerChange = () => {},
    onSignedOutElsewhere = () => {},
    onSignedInElsewhere = () => {},
  }) {
    this.onEvent = onEvent;
    this.onStateChange = onStateChange;
    this.canReconnect = canReconnect;
    this.agentId = agentId;
    this.onRingerChange = onRingerChange;
    this.onSignedOutElsewhere = onSignedOutElsewhere;
    this.onSignedInElsewhere = onSignedInElsewhere;
    this.shared = canShare();
    this.stream = new LiveEvents({
      url,
      onEvent: (type, data, id) => this.fromStream(type, data, id),
      onStateChange: (state) => this.fromStreamState(state),
      canReconnect: () => this.leaderCanReconnect(),
    });
    this.tabId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
    this.role = "none";
    this.agent = null;
    this.channel = null;
    this.leaving = null; // aborts this tab's place in the leader election
    this.welcomed = false;
    this.pendingWelcomes = new Set();
    // The last snapshot and the events after it; null once too long to replay.
    this.log = [];
    this.lastEventId = null;
    this.lastKey = null;
    this.lastEventAt = null;
    this.state = "offline";
    this.ringsHere = false;
    this.ringerTicket = 0;
    this.ringerWait = null;
    this.releaseRinger = null;
    this.session = this.shared ? new BroadcastChannel(SESSION_CHANNEL) : null;
    if (this.session) this.session.onmessage = (message) => this.sessionNotice(message.data);
  }

  get lockName() {
    return `${NAME_PREFIX}.${this.agent}`;
  }

  /** Join the signed-in agent's tabs (or restart the stream, if this tab holds it). */
  start() {
    const agent = this.agentId();
    if (this.role !== "none" && agent === this.agent) {
      if (this.role !== "follower") this.stream.start();
      return;
    }
    if (this.role !== "none" || agent !== this.agent) this.stop({ forget: true });
    this.agent = agent;
    if (!this.shared) {
      this.setRole("private");
      this.setRinger(true);
      this.openStream();
      return;
    }
    this.session.postMessage({ kind: "signed-in", agentId: agent });
    this.channel = new BroadcastChannel(this.lockName);
    this.channel.onmessage = (message) => this.fromChannel(message.data);
    this.welcomed = false;
    this.setRole("follower");
    this.setState(this.lastEventAt ? "reconnecting" : "connecting");
    this.leaving = new AbortController();
    const { signal } = this.leaving;
    navigator.locks.request(this.lockName, { signal }, () => this.lead(signal)).catch(() => {
      // aborted: this tab left before its turn came
    });
    this.queueForRinger();
    this.post({ kind: "hello", from: this.tabId });
  }

  /** Leave: give up the stream (the next tab takes it over at once) and the ringtone. */
  stop({ forget = false } = {}) {
    if (this.leaving) this.leaving.abort();
    this.leaving = null;
    this.dropRinger();
    if (this.channel) this.channel.close();
    this.channel = null;
    this.pendingWelcomes.clear();
    this.stream.stop({ forget });
    this.setRole("none");
    if (forget) {
      this.log = [];
      this.lastEventId = null;
      this.lastKey = null;
      this.lastEventAt = null;
      this.agent = null;
    }
    this.setState("offline");
  }

  /** Tell the other tabs that this agent signed out here, so they show the sign-in form. */
  announceSignOut() {
    if (this.session && this.agent) {
      this.session.postMessage({ kind: "signed-out", agentId: this.agent });
    }
  }

  /** Make this tab the one that rings (the tab the agent used last; called on a click or key). */
  claimRinger() {
    if (this.role === "none" || this.role === "private" || this.ringsHere) return;
    this.ringerTicket += 1;
    if (this.ringerWait) this.ringerWait.abort();
    this.requestRinger({ steal: true });
  }

  // ---- the leader ------------------------------------------------------------------------

  /** Hold the lock and the stream until this tab leaves or closes. */
  lead(signal) {
    if (signal.aborted) return undefined;
    this.setRole("leader");
    this.welcomed = true;
    this.post({ kind: "leader", from: this.tabId });
    this.openStream();
    return new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
  }

  openStream() {
    // From the last event any tab here saw: the events broadcast between the old leader's last
    // one and this connect come as the catch-up. An empty log has no snapshot to go on from.
    const resume = this.log === null || this.log.length > 0;
    this.stream.lastEventId = resume ? this.lastEventId : null;
    this.stream.lastEventAt = this.lastEventAt;
    this.stream.start();
  }

  fromStream(type, data, id) {
    if (this.role !== "leader" && this.role !== "private") return;
    if (!this.take(type, data, id)) return;
    this.post({ kind: "event", type, data, id });
    this.onEvent(type, data);
    if (type === "snapshot" && this.pendingWelcomes.size) {
      for (const tab of this.pendingWelcomes) this.welcome(tab);
      this.pendingWelcomes.clear();
    }
  }

  fromStreamState(state) {
    if (this.role !== "leader" && this.role !== "private") return;
    this.setState(state);
    this.post({ kind: "state", state, lastEventAt: this.lastEventAt });
  }

  async leaderCanReconnect() {
    const agent = this.agent;
    const valid = await this.canReconnect();
    // The stream was refused: every tab checks its session (a 401 shows its sign-in form). On
    // the session channel: this tab may have left the agent's channel meanwhile (the 401).
    if (!valid && this.session) this.session.postMessage({ kind: "check-session", agentId: agent });
    return valid;
  }

  /** Replay the snapshot and the events since to a new tab, or take a fresh snapshot first. */
  greet(tab) {
    if (this.log !== null) {
      this.welcome(tab);
      return;
    }
    this.pendingWelcomes.add(tab);
    if (this.pendingWelcomes.size > 1) return; // a fresh snapshot is on its way
    // Reconnecting without a resume point brings a snapshot; the pages take it as the truth,
    // and the reset before it makes them fetch the history for what the gap may have hidden.
    const reset = { reason: "a new tab joined: a fresh snapshot for every tab" };
    this.take("reset", reset, null);
    this.post({ kind: "event", type: "reset", data: reset, id: null });
    this.onEvent("reset", reset);
    this.stream.lastEventId = null;
    this.stream.start();
  }

  welcome(tab) {
    this.post({
      kind: "welcome",
      to: tab,
      log: this.log || [],
      state: this.state,
      lastEventAt: this.lastEventAt,
    });
  }

  // ---- every tab ---------------------------------------------------------------------------

  /** Note an event; false for one this tab has already had (by its stream id). */
  take(type, data, id) {
    const key = streamKey(id);
    if (type === "snapshot") {
      // The truth, whatever came before; its id may be older than the last one if the stream
      // was replaced, and the server goes on from it too.
      this.log = [{ type, data, id }];
      this.lastKey = key;
      this.lastEventId = id;
    } else if (type !== "reset") {
      // (A reset has no id of its own; the snapshot after it has.)
      if (key && this.lastKey && !isAfter(key, this.lastKey)) return false;
      if (key) {
        this.lastKey = key;
        this.lastEventId = id;
      }
      if (this.log !== null) this.log.push({ type, data, id });
      if (this.log !== null && this.log.length > REPLAY_LIMIT) this.log = null;
    }
    this.lastEventAt = Date.now();
    return true;
  }

  fromChannel(message) {
    switch (message.kind) {
      case "hello":
        if (this.role === "leader") this.greet(message.from);
        break;
      case "welcome":
        if (message.to !== this.tabId || this.welcomed || this.role !== "follower") break;
        this.welcomed = true;
        for (const entry of message.log || []) this.follow(entry);
        this.mirror(message);
        break;
      case "leader":
        // A tab that asked the old leader and was not answered asks the new one.
        if (this.role === "follower" && !this.welcomed) this.post({ kind: "hello", from: this.tabId });
        break;
      case "event":
        // Before its welcome, a tab drops events: the welcome's replay has them.
        if (this.role === "follower" && this.welcomed) this.follow(message);
        break;
      case "state":
        if (this.role === "follower") this.mirror(message);
        break;
      default:
        break;
    }
  }

  follow({ type, data, id }) {
    if (this.take(type, data, id)) this.onEvent(type, data);
  }

  mirror({ state, lastEventAt }) {
    if (lastEventAt && (!this.lastEventAt || lastEventAt > this.lastEventAt)) {
      this.lastEventAt = lastEventAt;
    }
    this.setState(state);
  }

  sessionNotice(message) {
    const mine = this.role !== "none" && message.agentId === this.agent;
    if (message.kind === "signed-out" && mine) {
      this.onSignedOutElsewhere();
    } else if (message.kind === "check-session" && mine) {
      this.canReconnect();
    } else if (message.kind === "signed-in" && !mine) {
      this.onSignedInElsewhere();
    }
  }

  post(message) {
    if (this.channel) this.channel.postMessage(message);
  }

  setRole(role) {
    if (role === this.role) return;
    this.role = role;
    this.onStateChange(this.state);
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.onStateChange(state);
  }

  // ---- the ringtone: one tab plays it ------------------------------------------------------

  /** Wait for the ringer lock; a tab gets it when no other tab holds it (the holder closed). */
  queueForRinger() {
    this.ringerWait = new AbortController();
    this.requestRinger({ signal: this.ringerWait.signal });
  }

  requestRinger(options) {
    const ticket = this.ringerTicket;
    navigator.locks
      .request(`${this.lockName}.ringer`, options, () => {
        if (ticket !== this.ringerTicket) return undefined; // given up meanwhile
        this.setRinger(true);
        return new Promise((resolve) => {
          this.releaseRinger = resolve;
        });
      })
      .catch(() => {
        // Another tab took the ringer (a click there): wait for it again. An aborted wait is
        // not this ticket any more.
        if (ticket !== this.ringerTicket || this.role === "none") return;
        this.releaseRinger = null;
        this.setRinger(false);
        this.queueForRinger();
      });
  }

  dropRinger() {
    this.ringerTicket += 1;
    if (this.ringerWait) this.ringerWait.abort();
    this.ringerWait = null;
    if (this.releaseRinger) this.releaseRinger();
    this.releaseRinger = null;
    this.setRinger(false);
  }

  setRinger(on) {
    if (on === this.ringsHere) return;
    this.ringsHere = on;
    this.onRingerChange(on);
  }
}
