// Logged-in users confirm or correct an answer with one click: the digit's ten buttons, the buttons under
// each digit of a number, or the number's second reading. A live preview is not kept, so the drawing is
// stored first, then labelled at the `label_url` the API's answer names for it (each digit's, for a number).

import { offeredAlternative, valueOf } from "./answer.js";
import { errorDetail, postJson } from "./api.js";

export class Labelling {
  constructor({ doc = document, authenticated, predictor, view }) {
    this.panel = doc.getElementById("labelling"); // absent for visitors who are not logged in
    this.status = doc.getElementById("label-status");
    this.buttons = [...doc.querySelectorAll("#label-buttons button")];
    this.enabled = authenticated && Boolean(this.panel);
    Object.assign(this, { predictor, view });
    this.buttons.forEach((btn) => btn.addEventListener("click", () => this.label(Number(btn.dataset.label))));
  }

  // Whether the digit keys label (the panel is on show).
  get open() {
    return this.enabled && !this.panel.hidden;
  }

  // A digit's answer: the buttons, its guess (or its two guesses) marked.
  offer(r) {
    if (!this.enabled) return;
    const [, second] = r.top_two || [];
    this.panel.hidden = false;
    this.status.textContent = r.drawing ? "" : "Click the right digit to save this drawing with its label.";
    delete this.status.dataset.savedLabel;
    this.buttons.forEach((btn) => {
      const d = Number(btn.dataset.label);
      btn.classList.toggle("predicted", d === r.digit);
      btn.classList.toggle("guess", Boolean(r.uncertain && second && d === second.digit));
      btn.classList.remove("chosen");
    });
  }

  hide() {
    if (this.panel) this.panel.hidden = true;
  }

  // The answer on show if it is about this drawing and stored, else the answer of storing it now.
  async stored(isStored) {
    const r = this.predictor.current;
    if (r && isStored(r)) return r;
    const fresh = await this.predictor.predict({ store: true });
    return fresh && isStored(fresh) ? fresh : null;
  }

  async label(digit) {
    if (!this.enabled) return;
    if (this.predictor.pad.empty) {
      this.predictor.forget("The canvas is empty: draw a digit first.");
      return;
    }
    const r = await this.stored((a) => a.mode !== "number" && a.label_url != null);
    if (!r) return;
    this.status.textContent = "Saving…";
    try {
      const { ok, status, data } = await postJson(r.label_url, { label: digit });
      if (!ok) {
        this.status.textContent = `Not saved: ${errorDetail(status, data, `the server answered ${status}.`)}`;
        return;
      }
      this.buttons.forEach((btn) => btn.classList.toggle("chosen", Number(btn.dataset.label) === data.label));
      this.status.textContent = data.label === data.predicted_digit
        ? `Saved: you confirmed it is a ${data.label}. Thank you!`
        : `Saved: it is a ${data.label} (the model said ${data.predicted_digit}). Thank you for the correction!`;
      this.status.dataset.savedLabel = String(data.label);
    } catch (err) {
      this.status.textContent = "Could not reach the server: the label is not saved. Try again.";
    }
  }

  // Number mode: digit `index` of the number is a `digit`.
  async labelDigit(index, digit) {
    if (!this.enabled) return;
    const r = await this.stored((a) => a.mode === "number" && a.digits[index] && a.digits[index].label_url != null);
    if (!r) return;
    await this.saveDigit(r, index, digit);
    this.view.updateNumber(r);
  }

  // Number mode: the model's second reading `number` instead of its first, saved as a label on each digit it
  // reads otherwise. Only with as many digits as the answer: a label corrects a digit, not where digits split.
  async takeAlternative(number) {
    if (!this.enabled) return;
    const r = await this.stored((a) => a.mode === "number" && a.digits.every((d) => d.label_url != null));
    // Storing it may have read the drawing again (a live preview was on show): that answer is on show now,
    // with its own offer, and this one applies only if it is still the same.
    if (!r || offeredAlternative(r) !== number || number.length !== r.digits.length) return;
    for (const [i, d] of r.digits.entries()) {
      if (String(valueOf(d)) !== number[i]) await this.saveDigit(r, i, Number(number[i]));
    }
    this.view.updateNumber(r);
  }

  // Store digit `index` of the stored number answer `r` as a `digit`, and say so under its guess; on success
  // `r.digits[index].label` holds it, which the view reads for the number as it stands.
  async saveDigit(r, index, digit) {
    const li = this.view.numberDigits.querySelector(`li[data-index="${index}"]`);
    const saved = li && li.querySelector(".saved");
    const say = (text) => { if (saved) saved.textContent = text; };
    say("Saving…");
    try {
      const { ok, status, data } = await postJson(r.digits[index].label_url, { label: digit });
      if (!ok) {
        say(`Not saved: ${errorDetail(status, data, `the server answered ${status}.`)}`);
        return false;
      }
      r.digits[index].label = data.label;
      if (li) li.querySelectorAll("button").forEach((btn) => btn.classList.toggle("chosen", Number(btn.dataset.label) === data.label));
      say(data.label === data.predicted_digit ? "Saved: confirmed." : `Saved: it is a ${data.label}.`);
      if (saved) saved.dataset.savedLabel = String(data.label);
      return true;
    } catch (err) {
      say("Could not reach the server: not saved. Try again.");
      return false;
    }
  }
}
