// The drawing page (templates/recognizer/home.html): draw a digit, or a number in number mode, read the
// model's answer live or on Predict, and (logged in) confirm or correct it with one click. This file wires
// the parts together; canvas.js is the pad, predict.js the requests, answer.js the answer on the page,
// labelling.js the corrections and api.js the HTTP. No build step: the browser loads them as ES modules.

import { AnswerView } from "./answer.js";
import { Pad } from "./canvas.js";
import { Labelling } from "./labelling.js";
import { Predictor } from "./predict.js";

const IDLE = {
  digit: "Draw a digit and I will guess it.",
  number: "Write a number and I will read it.",
};
const TITLES = { digit: "Draw a digit", number: "Write a number" };

const app = document.getElementById("app");
if (app) start(app);

function start(app) {
  const $ = (id) => document.getElementById(id);
  // The predict URL comes from the page (Django's {% url %}); each label URL comes with the API's answer.
  const authenticated = app.dataset.authenticated === "true";
  const live = $("live");
  const modes = [...document.querySelectorAll("input[name=mode]")];
  const view = new AnswerView(document);

  // The callbacks name parts made after them: they only run on the user's input, once all exist.
  const pad = new Pad($("pad"), {
    onChange: () => { if (pad.empty) predictor.forget(IDLE[pad.mode]); },
    onPen: () => predictor.scheduleLive(),
  });
  const predictor = new Predictor({
    url: app.dataset.predictUrl, authenticated, pad, view,
    isLive: () => Boolean(live && live.checked),
    onAnswer: (r) => {
      if (r.mode === "number") {
        view.showNumber(r, labelling.enabled ? {
          onLabel: (index, digit) => labelling.labelDigit(index, digit),
          onAlternative: (number) => labelling.takeAlternative(number),
        } : {});
      } else {
        view.showDigit(r);
        labelling.offer(r);
      }
    },
    onForget: (message) => {
      view.reset(message);
      labelling.hide();
    },
  });
  const labelling = new Labelling({ doc: document, authenticated, predictor, view });

  const predict = () => predictor.predict({ store: true });
  const undo = () => {
    pad.undo();
    if (!pad.empty) predictor.scheduleLive(0);
  };
  const clear = () => pad.clear();

  function setMode(next) {
    if (!(next in TITLES) || next === pad.mode) return;
    app.classList.toggle("number-mode", next === "number");
    modes.forEach((input) => { input.checked = input.value === next; });
    $("pad-title").textContent = TITLES[next];
    pad.setMode(next);
  }

  $("predict").addEventListener("click", predict);
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clear);
  modes.forEach((input) => input.addEventListener("change", () => input.checked && setMode(input.value)));
  if (live) live.addEventListener("change", () => live.checked && predictor.scheduleLive(0));

  document.addEventListener("keydown", (e) => {
    // Typing in a field, or a browser shortcut, is not for the pad.
    if (e.target.closest("input, textarea, select, [contenteditable]") || e.altKey) return;
    const key = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && key === "z") {
      e.preventDefault();
      undo();
    } else if (e.ctrlKey || e.metaKey) {
      return;
    } else if (key === "enter" && !e.target.closest("button, a")) {
      e.preventDefault();
      predict();
    } else if (key === "u") {
      undo();
    } else if (key === "escape" || key === "c") {
      clear();
    } else if (/^[0-9]$/.test(key) && pad.mode === "digit" && labelling.open) {
      labelling.label(Number(key));
    }
  });
}
