// What the model said, on the page: the status line, the digit with its ten bars, or the number with a box
// over each of its digits on the pad, the unsure ones marked and said, and its second reading offered.
// Labelling (the user's answer back) is labelling.js.

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
    this.numberAlternative = $("number-alternative");
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
    this.numberAlternative.replaceChildren();
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

  // `onLabel(index, digit)`, for logged-in users: ten buttons under each digit's guess to correct it;
  // `onAlternative(number)`: a button that takes the model's second reading of the whole number instead.
  showNumber(r, { onLabel = null, onAlternative = null } = {}) {
    this.answer.hidden = true;
    this.numberAnswer.hidden = false;
    this.onAlternative = onAlternative;
    this.boxes.replaceChildren(...r.digits.map((d, i) => box(d, i)));
    this.numberDigits.replaceChildren(...r.digits.map((d, i) => guess(d, i, onLabel)));
    this.updateNumber(r);
  }

  // The number as it stands: the model's reading with the user's labels so far (labelling.js sets a digit's
  // `label`), which digits are still unsure, whether the split is, and the second reading while it still fits.
  // Called again after each label, so the marks, the sentence and the offer follow the corrections.
  updateNumber(r) {
    const now = numberNow(r);
    const unsure = r.digits.flatMap((d, i) => (unsureOf(d) ? [i] : []));
    const splitUnsure = Boolean(r.segmentation && r.segmentation.uncertain);
    const labelled = r.digits.some((d) => d.label != null);
    const all = unsure.length === r.digits.length; // then a "?" for each would hide the whole reading
    const doubts = [];
    if (unsure.length) doubts.push(all ? `not sure of ${unsure.length > 1 ? "any of its digits" : "it"}` : `not sure of ${places(unsure)}`);
    // A label fixes a digit, not the split (two digits read as one, one read as two): that doubt stays.
    if (splitUnsure) doubts.push("not sure where one digit ends and the next begins");
    // Unsure overall without saying of what (an older server): the whole number is in doubt until corrected.
    const vague = !doubts.length && r.uncertain && !labelled;
    const shown = all ? now : r.digits.map((d) => (unsureOf(d) ? "?" : String(valueOf(d)))).join("");

    this.numberAnswer.classList.toggle("unsure", doubts.length > 0 || vague);
    this.numberAnswer.classList.toggle("vague", vague); // no digit to mark: the whole number is
    this.number.replaceChildren(...r.digits.map((d) => numeral(d)));
    if (doubts.length) this.numberVerdict.textContent = `I read ${shown} — ${doubts.join("; ")}.`;
    else if (vague) this.numberVerdict.textContent = `I read ${now}, but I'm not sure of it.`;
    else if (now !== r.number) this.numberVerdict.textContent = `Corrected: it's ${now} (I read ${r.number}).`;
    else this.numberVerdict.textContent = `It's ${now}.`;
    if (unsure.length) this.setStatus("Not sure of some digits: the unsure ones are marked.", "unsure");
    else if (vague) this.setStatus("Not sure of this number: correct any digit that is wrong.", "unsure");
    else if (splitUnsure) this.setStatus("Not sure how it splits into digits: check the boxes over the pad.", "unsure");
    else this.setStatus("", "");
    this.quick.textContent = doubts.length ? `I read ${shown}` : `It's ${now}`;
    this.quick.hidden = false;

    r.digits.forEach((d, i) => {
      const fixed = d.label != null && d.label !== d.digit;
      const el = this.boxes.querySelector(`.box[data-index="${i}"]`);
      if (el) {
        el.className = `box${unsureOf(d) ? " unsure" : ""}${fixed ? " corrected" : ""}`;
        el.querySelector("span").textContent = `${valueOf(d)}${unsureOf(d) ? "?" : ""}`;
      }
      const li = this.numberDigits.querySelector(`li[data-index="${i}"]`);
      if (li) {
        li.className = `${unsureOf(d) ? "unsure" : ""}${fixed ? " corrected" : ""}`.trim();
        li.querySelector(".guess").textContent = `${valueOf(d)}${unsureOf(d) ? "?" : ""}`;
      }
    });
    this.showAlternative(r, offeredAlternative(r));
  }

  // "Or is it 176?": with as many digits as the answer, a button (logged in) that labels the digits that
  // differ; with another count, only the words, since a label corrects a digit and cannot split or join them.
  showAlternative(r, other) {
    const el = this.numberAlternative;
    el.hidden = !other;
    if (!other) {
      el.replaceChildren();
      return;
    }
    const count = r.digits.length;
    if (other.length !== count) {
      el.textContent = `Or is it ${other}? That is ${other.length} digits, not ${count}: if so, clear the pad and `
        + "write it again with clearer gaps between the digits.";
      return;
    }
    const changes = [...other].flatMap((c, i) => (c !== String(valueOf(r.digits[i])) ? [i] : []));
    // "the 3rd digit would be a 6", "the 1st digit would be a 2 and the 3rd an 8"
    const parts = changes.map((i, k) => `the ${ordinal(i + 1)}${k ? "" : " digit would be"} ${article(other[i])} ${other[i]}`);
    const what = parts.length > 1 ? `${parts.slice(0, -1).join(", ")} and ${parts[parts.length - 1]}` : parts[0];
    if (!this.onAlternative) {
      el.textContent = `Or is it ${other}? (${what})`;
      return;
    }
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "alternative-button";
    btn.textContent = `Or is it ${other}?`;
    // One click saves each digit that differs; the button waits meanwhile so a second click saves nothing twice.
    btn.addEventListener("click", async () => {
      btn.disabled = true;
      try {
        await this.onAlternative(other);
      } finally {
        btn.disabled = false;
      }
    });
    const note = document.createElement("span");
    note.className = "muted";
    note.textContent = ` ${what[0].toUpperCase()}${what.slice(1)}.`;
    el.replaceChildren(btn, note);
  }
}

// A number answer's digits as they stand: what the user labelled a digit is what it is, and no longer unsure.
export const valueOf = (d) => (d.label != null ? d.label : d.digit);
const unsureOf = (d) => Boolean(d.uncertain) && d.label == null;
export const numberNow = (r) => r.digits.map(valueOf).join("");

// The server's second reading, while it still says something: not once it is the number as it stands, not
// when it contradicts a digit the user labelled, and (another digit count) not once the user has labelled
// digits of this split, which says the split is right.
export function offeredAlternative(r) {
  const other = r.alternative;
  if (!other || other === numberNow(r)) return null;
  if (other.length === r.digits.length) {
    return r.digits.every((d, i) => d.label == null || String(d.label) === other[i]) ? other : null;
  }
  return r.digits.some((d) => d.label != null) ? null : other;
}

// 1 -> "1st", 2 -> "2nd", 12 -> "12th": people count a number's digits from the left, from one.
function ordinal(n) {
  const suffix = { 1: "st", 2: "nd", 3: "rd" }[n % 10];
  return `${n}${suffix && Math.floor(n / 10) % 10 !== 1 ? suffix : "th"}`;
}

const article = (digit) => (String(digit) === "8" ? "an" : "a");

// Positions from 0: [1] -> "the 2nd digit", [0, 2] -> "the 1st and 3rd digits".
function places(positions) {
  const names = positions.map((i) => ordinal(i + 1));
  if (names.length === 1) return `the ${names[0]} digit`;
  return `the ${names.slice(0, -1).join(", ")} and ${names[names.length - 1]} digits`;
}

// One digit of the big number: an unsure one marked (its words are in the verdict, for screen readers).
function numeral(d) {
  const el = document.createElement("span");
  el.className = unsureOf(d) ? "unsure" : d.label != null && d.label !== d.digit ? "corrected" : "";
  el.textContent = String(valueOf(d));
  return el;
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
