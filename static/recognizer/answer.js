// What the model said, on the page: the status line, the digit with its ten bars, or the number with a box
// over each of its digits on the pad. Labelling (the user's answer back) is labelling.js.

import { EXPORT_SIZE, NUMBER_ASPECT } from "./canvas.js";
import { errorDetail } from "./api.js";

const pct = (p) => `${Math.round(p * 100)}%`;

export class AnswerView {
  constructor(doc = document) {
    const $ = (id) => doc.getElementById(id);
    this.app = $("app");
    this.status = $("status");
    this.quick = $("quick-answer");
    this.answer = $("answer");
    this.digit = $("digit");
    this.verdict = $("verdict");
    this.confidence = $("confidence");
    this.bars = [...doc.querySelectorAll("#bars li")];
    this.numberAnswer = $("number-answer");
    this.number = $("number");
    this.numberVerdict = $("number-verdict");
    this.numberDigits = $("number-digits");
    this.boxes = $("boxes");
  }

  setStatus(message, kind = "") {
    this.status.textContent = message;
    this.status.className = `status ${kind}`;
    this.status.hidden = !message;
  }

  setBusy(busy) {
    this.app.classList.toggle("busy", busy);
  }

  // No answer on show: an empty pad, a new mode, or a drawing that changed since.
  reset(message) {
    this.answer.hidden = true;
    this.quick.hidden = true;
    this.bars.forEach((li) => {
      li.querySelector(".fill").style.width = "0%";
      li.querySelector(".pct").textContent = "–";
      li.classList.remove("top", "second");
    });
    this.numberAnswer.hidden = true;
    this.boxes.replaceChildren();
    this.setStatus(message, "info");
  }

  // The drawing stays on the pad whatever went wrong, and the message says so: nothing is lost by retrying.
  showError(status, data) {
    const detail = errorDetail(status, data);
    if (status === 422) this.setStatus(`${detail} `, "info"); // nothing to read in the drawing: not a failure
    else if (status === 429) this.setStatus(`Slow down a little: ${detail} Your drawing is kept.`, "error");
    else this.setStatus(`${detail} Your drawing is kept.`, "error");
  }

  showOffline() {
    this.setStatus("Could not reach the server. Your drawing is still here: try again.", "error");
  }

  showDigit(r) {
    const [a, b] = r.top_two || [];
    const unsure = Boolean(r.uncertain && a && b);
    this.answer.hidden = false;
    this.answer.classList.toggle("unsure", r.uncertain);
    if (unsure) {
      this.digit.textContent = `${a.digit}?`;
      this.verdict.textContent = `I'm not sure: a ${a.digit} (${pct(a.probability)}) or a ${b.digit} (${pct(b.probability)})?`;
      this.setStatus("Not sure. Is it one of these two?", "unsure");
    } else {
      this.digit.textContent = String(r.digit);
      this.verdict.textContent = `It's a ${r.digit}.`;
      this.setStatus("", "");
    }
    this.confidence.textContent = `${pct(r.confidence)} confident · model v${r.model_version}`;
    // On a phone the result card is below the fold: a one-line answer under the pad.
    this.quick.textContent = unsure ? `A ${a.digit} or a ${b.digit}?` : `It's a ${r.digit} (${pct(r.confidence)})`;
    this.quick.hidden = false;
    this.bars.forEach((li, d) => {
      const p = r.probabilities[d] || 0;
      li.querySelector(".fill").style.width = pct(p);
      li.querySelector(".pct").textContent = pct(p);
      li.classList.toggle("top", d === r.digit);
      li.classList.toggle("second", unsure && d === b.digit);
    });
  }

  // `onLabel(index, digit)`, for logged-in users: ten buttons under each digit's guess to correct it.
  showNumber(r, onLabel = null) {
    this.answer.hidden = true;
    this.numberAnswer.hidden = false;
    this.numberAnswer.classList.toggle("unsure", r.uncertain);
    this.number.textContent = r.number;
    this.numberVerdict.textContent = r.uncertain
      ? `I read ${r.number}, but I'm not sure of every digit.`
      : `It's ${r.number}.`;
    this.setStatus(r.uncertain ? "Not sure of some digits: the unsure ones are marked." : "", r.uncertain ? "unsure" : "");
    this.quick.textContent = `It's ${r.number}`;
    this.quick.hidden = false;
    this.boxes.replaceChildren(...r.digits.map((d, i) => box(d, i)));
    this.numberDigits.replaceChildren(...r.digits.map((d, i) => guess(d, i, onLabel)));
  }

  // The number as the user corrected it so far (`corrected`), next to what the model read.
  showCorrectedNumber(r, corrected) {
    this.number.textContent = corrected;
    this.numberVerdict.textContent = corrected === r.number ? `It's ${corrected}.` : `Corrected: it's ${corrected} (I read ${r.number}).`;
    this.quick.textContent = `It's ${corrected}`;
  }
}

// A digit's box over the pad, placed in percent of the exported image so it follows the pad's size on screen.
function box(d, i) {
  const exportWidth = EXPORT_SIZE * NUMBER_ASPECT;
  const [x0, y0, x1, y1] = d.box;
  const el = document.createElement("div");
  el.className = `box${d.uncertain ? " unsure" : ""}`;
  el.dataset.index = String(i);
  el.style.left = `${(100 * x0) / exportWidth}%`;
  el.style.top = `${(100 * y0) / EXPORT_SIZE}%`;
  el.style.width = `${(100 * (x1 - x0)) / exportWidth}%`;
  el.style.height = `${(100 * (y1 - y0)) / EXPORT_SIZE}%`;
  const tag = document.createElement("span");
  tag.textContent = `${d.digit}${d.uncertain ? "?" : ""}`;
  el.append(tag);
  return el;
}

function guess(d, i, onLabel) {
  const li = document.createElement("li");
  li.className = d.uncertain ? "unsure" : "";
  li.dataset.index = String(i);
  const shown = document.createElement("span");
  shown.className = "guess";
  shown.textContent = `${d.digit}${d.uncertain ? "?" : ""}`;
  const conf = document.createElement("span");
  conf.className = "muted";
  const [a, b] = d.top_two || [];
  conf.textContent = d.uncertain && a && b
    ? `${pct(d.confidence)} · a ${a.digit} or a ${b.digit}?` : `${pct(d.confidence)} confident`;
  li.append(shown, conf);
  if (onLabel) {
    const buttons = document.createElement("div");
    buttons.className = "digits small";
    for (let n = 0; n <= 9; n++) {
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = `digit-button${n === d.digit ? " predicted" : ""}`;
      btn.dataset.label = String(n);
      btn.title = `Digit ${i + 1} is a ${n}`;
      btn.textContent = String(n);
      btn.addEventListener("click", () => onLabel(i, n));
      buttons.append(btn);
    }
    const saved = document.createElement("span");
    saved.className = "saved muted";
    li.append(buttons, saved);
  }
  return li;
}
