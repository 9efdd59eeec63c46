// The drawing page: a Pointer Events canvas (mouse, pen, touch), live and on-demand predictions
// through the REST API, and one-click labelling for logged-in users. No build step: an ES module.
// Number mode: a wider pad; the API splits the drawing into digits, each answered with its box over
// the pad and its own correction buttons.

const EXPORT_SIZE = 280; // the PNG sent to the API, whatever the canvas's size on screen
const LINE_WIDTH = 0.065; // of the side: a felt-tip pen, close to MNIST's stroke once scaled to 28x28
const LIVE_DELAY_MS = 300; // debounce of live predictions after the pen stops moving
const LIVE_EVERY_MS = 900; // and at most this often while it keeps moving
const NUMBER_ASPECT = 2; // number mode: the pad is twice as wide as tall
const MAX_STROKES = 64; // what the API accepts (recognizer.ml.strokes): beyond it the image goes alone
const MAX_POINTS = 5000; // over all strokes: beyond it each stroke is thinned before sending
const MAX_T = 1e6; // ms (about 16 minutes): a drawing left that long and finished later goes as an image alone

const app = document.getElementById("app");
if (app) init(app);

function init(app) {
  const $ = (id) => document.getElementById(id);
  const canvas = $("pad");
  const ctx = canvas.getContext("2d");
  const cfg = {
    predictUrl: app.dataset.predictUrl,
    labelUrl: app.dataset.labelUrl,
    authenticated: app.dataset.authenticated === "true",
  };
  const ui = {
    status: $("status"), answer: $("answer"), digit: $("digit"), verdict: $("verdict"),
    confidence: $("confidence"), bars: [...document.querySelectorAll("#bars li")],
    labelling: $("labelling"), labelStatus: $("label-status"), quick: $("quick-answer"),
    labelButtons: [...document.querySelectorAll("#label-buttons button")], live: $("live"),
    modes: [...document.querySelectorAll("input[name=mode]")], boxes: $("boxes"), title: $("pad-title"),
    numberAnswer: $("number-answer"), number: $("number"), numberVerdict: $("number-verdict"),
    numberDigits: $("number-digits"),
  };
  let mode = "digit"; // or "number"
  const aspect = () => (mode === "number" ? NUMBER_ASPECT : 1);

  const strokes = []; // each stroke: [[x, y, t], ...], x and y in 0..1 of the side, t in ms since the drawing began
  let current = null; // the stroke being drawn
  let startedAt = 0; // event time of the drawing's first point
  let pointerId = null;
  let version = 0; // bumps on every change, so an answer is matched to the drawing it was about
  let result = null; // last answer, with .version
  let seq = 0; // only the newest request's answer is shown
  let controller = null;
  let liveTimer = null;
  let lastSent = 0;
  let frame = 0;
  // One Idempotency-Key per drawing attempt: Predict pressed twice (or a label storing it first) on the same
  // drawing sends the same key, and the server stores it once. Any change to the drawing gets a new key.
  let attempt = { version: -1, key: "" };

  // --- Drawing -----------------------------------------------------------------------------
  function paint(c, width, size, list) {
    // x in 0..1 of the width, y in 0..1 of the height (`size`); the pen scales with the height.
    c.clearRect(0, 0, width, size);
    c.lineCap = "round";
    c.lineJoin = "round";
    c.strokeStyle = c.fillStyle = "#111";
    c.lineWidth = LINE_WIDTH * size;
    for (const pts of list) {
      const p = pts.map(([x, y]) => [x * width, y * size]);
      if (p.length === 1) {
        c.beginPath();
        c.arc(p[0][0], p[0][1], c.lineWidth / 2, 0, Math.PI * 2);
        c.fill();
        continue;
      }
      // Quadratic curves through the midpoints: smooth strokes from jittery pointer samples.
      c.beginPath();
      c.moveTo(p[0][0], p[0][1]);
      for (let i = 1; i < p.length - 1; i++) {
        c.quadraticCurveTo(p[i][0], p[i][1], (p[i][0] + p[i + 1][0]) / 2, (p[i][1] + p[i + 1][1]) / 2);
      }
      const last = p[p.length - 1];
      c.lineTo(last[0], last[1]);
      c.stroke();
    }
  }

  function redraw() {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => paint(ctx, canvas.width, canvas.height, strokes));
  }

  function fitToScreen() {
    const rect = canvas.getBoundingClientRect();
    const width = Math.round(rect.width * (window.devicePixelRatio || 1));
    const height = Math.round(width / aspect());
    if (width > 0 && (canvas.width !== width || canvas.height !== height)) {
      canvas.width = width;
      canvas.height = height;
    }
    redraw();
  }
  new ResizeObserver(fitToScreen).observe(canvas);

  function exportPng() {
    const off = document.createElement("canvas");
    off.width = EXPORT_SIZE * aspect();
    off.height = EXPORT_SIZE;
    paint(off.getContext("2d"), off.width, EXPORT_SIZE, strokes); // black ink on transparent, like the model expects
    return off.toDataURL("image/png");
  }

  function point(e) {
    const r = canvas.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    const t = Math.max(0, Math.round(e.timeStamp - startedAt));
    return [clamp((e.clientX - r.left) / r.width), clamp((e.clientY - r.top) / r.height), t];
  }

  // The pen strokes as the API takes them: [[[x, y, t], ...], ...] in the pixels of the exported image (the
  // PNG sent with them), t in ms since the drawing began. Null when they exceed what the API accepts.
  function exportStrokes() {
    if (!strokes.length || strokes.length > MAX_STROKES) return null;
    if (strokes.some((s) => s.some((p) => p[2] > MAX_T))) return null;
    const total = strokes.reduce((n, s) => n + s.length, 0);
    // Over the limit (a long, slow drawing): every n-th point, and each stroke's last one.
    const every = total > MAX_POINTS ? Math.ceil(total / (MAX_POINTS - 2 * strokes.length)) : 1;
    const width = EXPORT_SIZE * aspect();
    const round = (v) => Math.round(v * 10) / 10;
    return strokes.map((s) => s
      .filter((_, i) => every === 1 || i % every === 0 || i === s.length - 1)
      .map(([x, y, t]) => [round(x * width), round(y * EXPORT_SIZE), t]));
  }

  function changed() {
    version++;
    if (!strokes.length) {
      reset(mode === "number" ? "Write a number and I will read it." : "Draw a digit and I will guess it.");
    }
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (pointerId !== null || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    pointerId = e.pointerId;
    canvas.setPointerCapture(e.pointerId);
    if (!strokes.length) startedAt = e.timeStamp;
    current = [point(e)];
    strokes.push(current);
    changed();
    redraw();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (e.pointerId !== pointerId || !current) return;
    e.preventDefault();
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) current.push(point(ev));
    version++;
    redraw();
    scheduleLive();
  });
  const endStroke = (e) => {
    if (e.pointerId !== pointerId) return;
    pointerId = null;
    current = null;
    scheduleLive();
  };
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  // Belt and braces next to `touch-action: none`: the page must not scroll while drawing.
  canvas.addEventListener("touchmove", (e) => e.preventDefault(), { passive: false });

  function undo() {
    if (!strokes.length) return;
    strokes.pop();
    changed();
    redraw();
    if (strokes.length) scheduleLive(0);
  }

  function clear() {
    strokes.length = 0;
    current = null;
    pointerId = null;
    changed();
    redraw();
  }

  // --- Predicting --------------------------------------------------------------------------
  function scheduleLive(delay = LIVE_DELAY_MS) {
    if (!ui.live || !ui.live.checked || !strokes.length) return;
    clearTimeout(liveTimer);
    if (current && performance.now() - lastSent > LIVE_EVERY_MS) {
      predict({ store: false });
      return;
    }
    liveTimer = setTimeout(() => predict({ store: false }), delay);
  }

  function csrfToken() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function newKey() {
    // crypto.randomUUID needs a secure context; getRandomValues works everywhere.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function attemptKey() {
    if (attempt.version !== version) attempt = { version, key: newKey() };
    return attempt.key;
  }

  async function post(url, body, signal, extraHeaders = {}) {
    const res = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken(), ...extraHeaders,
      },
      body: JSON.stringify(body),
      signal,
    });
    const data = await res.json().catch(() => ({}));
    return { res, data };
  }

  async function predict({ store }) {
    clearTimeout(liveTimer);
    if (!strokes.length) {
      reset("The canvas is empty: draw a digit first, then I will guess it.");
      return null;
    }
    const mine = ++seq;
    const about = version;
    if (controller) controller.abort();
    controller = new AbortController();
    lastSent = performance.now();
    app.classList.add("busy");
    try {
      // Number mode reads the image only (the API splits it into digits): the strokes go with single digits.
      const body = mode === "number" ? { image: exportPng(), store, mode } : { image: exportPng(), store };
      const drawn = mode === "number" ? null : exportStrokes();
      if (drawn) body.strokes = drawn;
      const headers = store && cfg.authenticated ? { "Idempotency-Key": attemptKey() } : {};
      const { res, data } = await post(cfg.predictUrl, body, controller.signal, headers);
      if (mine !== seq) return null;
      if (!res.ok) {
        showError(res.status, data);
        return null;
      }
      result = { ...data, version: about, mode };
      if (result.mode === "number") showNumber(result);
      else show(result);
      return result;
    } catch (err) {
      if (err.name === "AbortError") return null;
      setStatus("Could not reach the server. Your drawing is still here: try again.", "error");
      return null;
    } finally {
      if (mine === seq) app.classList.remove("busy");
    }
  }

  function showError(status, data) {
    const detail = data && data.detail ? data.detail : `The server answered ${status}.`;
    if (status === 422) setStatus(`${detail} `, "info");
    else if (status === 429) setStatus(`Slow down a little: ${detail} Your drawing is kept.`, "error");
    else setStatus(`${detail} Your drawing is kept.`, "error");
  }

  const pct = (p) => `${Math.round(p * 100)}%`;

  function show(r) {
    ui.answer.hidden = false;
    ui.answer.classList.toggle("unsure", r.uncertain);
    const [a, b] = r.top_two || [];
    if (r.uncertain && a && b) {
      ui.digit.textContent = `${a.digit}?`;
      ui.verdict.textContent = `I'm not sure: a ${a.digit} (${pct(a.probability)}) or a ${b.digit} (${pct(b.probability)})?`;
      setStatus("Not sure. Is it one of these two?", "unsure");
    } else {
      ui.digit.textContent = String(r.digit);
      ui.verdict.textContent = `It's a ${r.digit}.`;
      setStatus("", "");
    }
    ui.confidence.textContent = `${pct(r.confidence)} confident · model v${r.model_version}`;
    // On a phone the result card is below the fold: a one-line answer under the pad.
    ui.quick.textContent = r.uncertain && a && b ? `A ${a.digit} or a ${b.digit}?` : `It's a ${r.digit} (${pct(r.confidence)})`;
    ui.quick.hidden = false;
    ui.bars.forEach((li, d) => {
      const p = r.probabilities[d] || 0;
      li.querySelector(".fill").style.width = pct(p);
      li.querySelector(".pct").textContent = pct(p);
      li.classList.toggle("top", d === r.digit);
      li.classList.toggle("second", r.uncertain && b && d === b.digit);
    });
    if (ui.labelling) {
      ui.labelling.hidden = false;
      ui.labelStatus.textContent = r.drawing ? "" : "Click the right digit to save this drawing with its label.";
      ui.labelButtons.forEach((btn) => {
        const d = Number(btn.dataset.label);
        btn.classList.toggle("predicted", d === r.digit);
        btn.classList.toggle("guess", r.uncertain && b && d === b.digit);
        btn.classList.remove("chosen");
      });
    }
  }

  function reset(message) {
    seq++;
    if (controller) controller.abort();
    clearTimeout(liveTimer);
    app.classList.remove("busy");
    result = null;
    ui.answer.hidden = true;
    ui.quick.hidden = true;
    ui.bars.forEach((li) => {
      li.querySelector(".fill").style.width = "0%";
      li.querySelector(".pct").textContent = "–";
      li.classList.remove("top", "second");
    });
    if (ui.labelling) ui.labelling.hidden = true;
    if (ui.numberAnswer) ui.numberAnswer.hidden = true;
    if (ui.boxes) ui.boxes.replaceChildren();
    setStatus(message, "info");
  }

  // --- Number mode -------------------------------------------------------------------------
  function showNumber(r) {
    ui.answer.hidden = true;
    ui.numberAnswer.hidden = false;
    ui.numberAnswer.classList.toggle("unsure", r.uncertain);
    ui.number.textContent = r.number;
    ui.numberVerdict.textContent = r.uncertain
      ? `I read ${r.number}, but I'm not sure of every digit.`
      : `It's ${r.number}.`;
    setStatus(r.uncertain ? "Not sure of some digits: the unsure ones are marked." : "", r.uncertain ? "unsure" : "");
    ui.quick.textContent = `It's ${r.number}`;
    ui.quick.hidden = false;
    const exportWidth = EXPORT_SIZE * NUMBER_ASPECT;
    ui.boxes.replaceChildren(...r.digits.map((d, i) => {
      const [x0, y0, x1, y1] = d.box;
      const box = document.createElement("div");
      box.className = `box${d.uncertain ? " unsure" : ""}`;
      box.dataset.index = String(i);
      box.style.left = `${(100 * x0) / exportWidth}%`;
      box.style.top = `${(100 * y0) / EXPORT_SIZE}%`;
      box.style.width = `${(100 * (x1 - x0)) / exportWidth}%`;
      box.style.height = `${(100 * (y1 - y0)) / EXPORT_SIZE}%`;
      const tag = document.createElement("span");
      tag.textContent = `${d.digit}${d.uncertain ? "?" : ""}`;
      box.append(tag);
      return box;
    }));
    ui.numberDigits.replaceChildren(...r.digits.map((d, i) => {
      const li = document.createElement("li");
      li.className = d.uncertain ? "unsure" : "";
      li.dataset.index = String(i);
      const guess = document.createElement("span");
      guess.className = "guess";
      guess.textContent = `${d.digit}${d.uncertain ? "?" : ""}`;
      const conf = document.createElement("span");
      conf.className = "muted";
      const [a, b] = d.top_two || [];
      conf.textContent = d.uncertain && a && b
        ? `${pct(d.confidence)} · a ${a.digit} or a ${b.digit}?` : `${pct(d.confidence)} confident`;
      li.append(guess, conf);
      if (cfg.authenticated) {
        const buttons = document.createElement("div");
        buttons.className = "digits small";
        for (let n = 0; n <= 9; n++) {
          const btn = document.createElement("button");
          btn.type = "button";
          btn.className = `digit-button${n === d.digit ? " predicted" : ""}`;
          btn.dataset.label = String(n);
          btn.title = `Digit ${i + 1} is a ${n}`;
          btn.textContent = String(n);
          btn.addEventListener("click", () => labelDigit(i, n));
          buttons.append(btn);
        }
        const saved = document.createElement("span");
        saved.className = "saved muted";
        li.append(buttons, saved);
      }
      return li;
    }));
  }

  async function labelDigit(index, digit) {
    if (!cfg.authenticated) return;
    let r = result;
    if (!r || r.mode !== "number" || r.version !== version || !r.digits[index] || r.digits[index].drawing == null) {
      r = await predict({ store: true }); // live previews are not kept: store the number's digits first
      if (!r || !r.digits || !r.digits[index] || r.digits[index].drawing == null) return;
    }
    const li = ui.numberDigits.querySelector(`li[data-index="${index}"]`);
    const saved = li && li.querySelector(".saved");
    if (saved) saved.textContent = "Saving…";
    try {
      const { res, data } = await post(cfg.labelUrl.replace("/0/", `/${r.digits[index].drawing}/`), { label: digit });
      if (!res.ok) {
        if (saved) saved.textContent = `Not saved: ${data.detail || `the server answered ${res.status}.`}`;
        return;
      }
      r.digits[index].label = data.label;
      if (li) li.querySelectorAll("button").forEach((btn) => btn.classList.toggle("chosen", Number(btn.dataset.label) === data.label));
      if (saved) {
        saved.textContent = data.label === data.predicted_digit ? "Saved: confirmed." : `Saved: it is a ${data.label}.`;
        saved.dataset.savedLabel = String(data.label);
      }
      // The number as corrected so far.
      const corrected = r.digits.map((d) => (d.label != null ? d.label : d.digit)).join("");
      ui.number.textContent = corrected;
      ui.numberVerdict.textContent = corrected === r.number ? `It's ${corrected}.` : `Corrected: it's ${corrected} (I read ${r.number}).`;
      ui.quick.textContent = `It's ${corrected}`;
    } catch (err) {
      if (saved) saved.textContent = "Could not reach the server: not saved. Try again.";
    }
  }

  function setMode(next) {
    if (next !== "digit" && next !== "number") return;
    if (next === mode) return;
    mode = next;
    app.classList.toggle("number-mode", mode === "number");
    ui.modes.forEach((input) => { input.checked = input.value === mode; });
    if (ui.title) ui.title.textContent = mode === "number" ? "Write a number" : "Draw a digit";
    canvas.setAttribute("aria-label", mode === "number" ? "Drawing area: write a number, digits side by side" : "Drawing area: draw one digit");
    clear(); // the pad changes shape: a drawing would be stretched
    fitToScreen();
  }

  function setStatus(message, kind) {
    ui.status.textContent = message;
    ui.status.className = `status ${kind || ""}`;
    ui.status.hidden = !message;
  }

  // --- Labelling ---------------------------------------------------------------------------
  async function label(digit) {
    if (!cfg.authenticated || !ui.labelling) return;
    if (!strokes.length) {
      reset("The canvas is empty: draw a digit first.");
      return;
    }
    let r = result;
    if (!r || r.version !== version || r.drawing == null) {
      r = await predict({ store: true }); // live previews are not kept: store this drawing first
      if (!r || r.drawing == null) return;
    }
    ui.labelStatus.textContent = "Saving…";
    try {
      const { res, data } = await post(cfg.labelUrl.replace("/0/", `/${r.drawing}/`), { label: digit });
      if (!res.ok) {
        ui.labelStatus.textContent = `Not saved: ${data.detail || `the server answered ${res.status}.`}`;
        return;
      }
      ui.labelButtons.forEach((btn) => btn.classList.toggle("chosen", Number(btn.dataset.label) === data.label));
      ui.labelStatus.textContent = data.label === data.predicted_digit
        ? `Saved: you confirmed it is a ${data.label}. Thank you!`
        : `Saved: it is a ${data.label} (the model said ${data.predicted_digit}). Thank you for the correction!`;
      ui.labelStatus.dataset.savedLabel = String(data.label);
    } catch (err) {
      ui.labelStatus.textContent = "Could not reach the server: the label is not saved. Try again.";
    }
  }

  // --- Buttons and keys --------------------------------------------------------------------
  $("predict").addEventListener("click", () => predict({ store: true }));
  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", clear);
  ui.labelButtons.forEach((btn) => btn.addEventListener("click", () => label(Number(btn.dataset.label))));
  ui.modes.forEach((input) => input.addEventListener("change", () => input.checked && setMode(input.value)));
  if (ui.live) ui.live.addEventListener("change", () => ui.live.checked && scheduleLive(0));

  document.addEventListener("keydown", (e) => {
    if (e.target.closest("input, textarea, select, [contenteditable]") || e.altKey) return;
    const key = e.key.toLowerCase();
    if ((e.ctrlKey || e.metaKey) && key === "z") {
      e.preventDefault();
      undo();
    } else if (e.ctrlKey || e.metaKey) {
      return;
    } else if (key === "enter" && !e.target.closest("button, a")) {
      e.preventDefault();
      predict({ store: true });
    } else if (key === "u") {
      undo();
    } else if (key === "escape" || key === "c") {
      clear();
    } else if (/^[0-9]$/.test(key) && mode === "digit" && ui.labelling && !ui.labelling.hidden) {
      label(Number(key));
    }
  });

  // For tests and the curious: the current state of the pad.
  window.digitsite = {
    strokes, predict, label, labelDigit, clear, undo, exportPng, exportStrokes, setMode, get mode() { return mode; },
  };
}
