// Asking for predictions: on Predict (stored for logged-in users) and live while drawing (never stored).
// Only the newest request's answer is shown, and each answer remembers which drawing it was about.

import { newKey, postJson } from "./api.js";

const LIVE_DELAY_MS = 300; // debounce of live predictions after the pen stops moving
const LIVE_EVERY_MS = 900; // and at most this often while it keeps moving

export class Predictor {
  // url: the predict endpoint; isLive(): whether live predictions are on; onAnswer(result): a fresh answer,
  // the API's JSON plus `version` (the pad's, when it was sent) and `mode`; onForget(message): no answer
  // any more. `view` (answer.js) shows the busy state and errors.
  constructor({ url, authenticated, pad, view, isLive, onAnswer, onForget }) {
    Object.assign(this, { url, authenticated, pad, view, isLive, onAnswer, onForget });
    this.result = null; // the answer on show
    this.seq = 0; // bumps with each request: an older request's late answer is dropped
    this.controller = null;
    this.liveTimer = null;
    this.lastSent = 0;
    // One Idempotency-Key per drawing attempt: Predict pressed twice (or a label storing it first) on the same
    // drawing sends the same key, and the server stores it once. Any change to the drawing gets a new key.
    this.attempt = { version: -1, key: "" };
  }

  // The answer on show, if it is about the drawing now on the pad.
  get current() {
    return this.result && this.result.version === this.pad.version ? this.result : null;
  }

  // Drop any answer and any request on its way, and say `message` instead.
  forget(message) {
    this.seq++;
    if (this.controller) this.controller.abort();
    clearTimeout(this.liveTimer);
    this.result = null;
    this.view.setBusy(false);
    this.onForget(message);
  }

  scheduleLive(delay = LIVE_DELAY_MS) {
    if (!this.isLive() || this.pad.empty) return;
    clearTimeout(this.liveTimer);
    // A long stroke still gets answers while it is drawn, not only once the pen rests.
    if (this.pad.penIsDown && performance.now() - this.lastSent > LIVE_EVERY_MS) {
      this.predict({ store: false });
      return;
    }
    this.liveTimer = setTimeout(() => this.predict({ store: false }), delay);
  }

  attemptKey() {
    if (this.attempt.version !== this.pad.version) this.attempt = { version: this.pad.version, key: newKey() };
    return this.attempt.key;
  }

  // The answer (also handed to onAnswer), or null: empty pad, refused, unreachable, or overtaken by a newer one.
  async predict({ store }) {
    clearTimeout(this.liveTimer);
    if (this.pad.empty) {
      this.forget("The canvas is empty: draw a digit first, then I will guess it.");
      return null;
    }
    const mine = ++this.seq;
    const { version, mode } = this.pad;
    if (this.controller) this.controller.abort();
    this.controller = new AbortController();
    this.lastSent = performance.now();
    this.view.setBusy(true);
    try {
      // The strokes go in both modes, in the exported PNG's pixels (560 wide for a number): a single digit's
      // are read with its image, and a number's also say which ink belongs to which digit, a far surer split
      // than the ink alone (touching or overlapping digits, a 4's late bar). Null beyond what the API takes:
      // the image then goes alone, and a number is split from its ink.
      const body = mode === "number" ? { image: this.pad.exportPng(), store, mode } : { image: this.pad.exportPng(), store };
      const strokes = this.pad.exportStrokes();
      if (strokes) body.strokes = strokes;
      const idempotencyKey = store && this.authenticated ? this.attemptKey() : undefined;
      const { ok, status, data } = await postJson(this.url, body, { signal: this.controller.signal, idempotencyKey });
      if (mine !== this.seq) return null;
      if (!ok) {
        this.view.showError(status, data);
        return null;
      }
      this.result = { ...data, version, mode };
      this.onAnswer(this.result);
      return this.result;
    } catch (err) {
      if (err.name !== "AbortError" && mine === this.seq) this.view.showOffline();
      return null;
    } finally {
      if (mine === this.seq) this.view.setBusy(false);
    }
  }
}
