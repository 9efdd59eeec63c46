// The drawing pad: a Pointer Events canvas (mouse, pen, touch) that keeps the pen strokes, paints them, and
// exports them as the API takes them (a PNG, and the strokes in that PNG's pixels).

export const EXPORT_SIZE = 280; // the PNG sent to the API, whatever the canvas's size on screen
export const NUMBER_ASPECT = 2; // number mode: the pad is twice as wide as tall
const LINE_WIDTH = 0.065; // of the side: a felt-tip pen, close to MNIST's stroke once scaled to 28x28
const MAX_STROKES = 64; // what the API accepts (recognizer.ml.strokes): beyond it the image goes alone
const MAX_POINTS = 5000; // over all strokes: beyond it each stroke is thinned before sending
const MAX_T = 1e6; // ms (about 16 minutes): a drawing left that long and finished later goes as an image alone

const LABELS = {
  digit: "Drawing area: draw one digit",
  number: "Drawing area: write a number, digits side by side",
};

// Strokes are [[x, y, t], ...], x in 0..1 of the width, y in 0..1 of the height (`size`); the pen scales
// with the height, so a number's digits are as thick as a single digit's.
function paint(c, width, size, strokes) {
  c.clearRect(0, 0, width, size);
  c.lineCap = "round";
  c.lineJoin = "round";
  c.strokeStyle = c.fillStyle = "#111";
  c.lineWidth = LINE_WIDTH * size;
  for (const stroke of strokes) {
    const p = stroke.map(([x, y]) => [x * width, y * size]);
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

// The strokes as the API takes them: [[[x, y, t], ...], ...] in the pixels of an exported image `width`
// wide and EXPORT_SIZE high, t in ms since the drawing began. Null when they exceed what the API accepts,
// so the image goes alone rather than the whole request being refused.
export function strokesForApi(strokes, width) {
  if (!strokes.length || strokes.length > MAX_STROKES) return null;
  if (strokes.some((s) => s.some((p) => p[2] > MAX_T))) return null;
  const total = strokes.reduce((n, s) => n + s.length, 0);
  // Over the limit (a long, slow drawing): every n-th point, and each stroke's last one.
  const every = total > MAX_POINTS ? Math.ceil(total / (MAX_POINTS - 2 * strokes.length)) : 1;
  const round = (v) => Math.round(v * 10) / 10;
  return strokes.map((s) => s
    .filter((_, i) => every === 1 || i % every === 0 || i === s.length - 1)
    .map(([x, y, t]) => [round(x * width), round(y * EXPORT_SIZE), t]));
}

export class Pad {
  // onChange: a stroke was added or removed (the drawing is another one); onPen: the pen moved or lifted.
  constructor(canvas, { onChange = () => {}, onPen = () => {} } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onChange = onChange;
    this.onPen = onPen;
    this.mode = "digit"; // or "number"
    this.strokes = [];
    this.current = null; // the stroke being drawn
    this.pointerId = null;
    this.startedAt = 0; // event time of the drawing's first point
    this.version = 0; // bumps on every change, so an answer can be matched to the drawing it was about
    this.frame = 0;

    new ResizeObserver(() => this.fitToScreen()).observe(canvas);
    canvas.addEventListener("pointerdown", (e) => this.penDown(e));
    canvas.addEventListener("pointermove", (e) => this.penMove(e));
    canvas.addEventListener("pointerup", (e) => this.penUp(e));
    canvas.addEventListener("pointercancel", (e) => this.penUp(e));
    // Belt and braces next to `touch-action: none`: the page must not scroll while drawing.
    canvas.addEventListener("touchmove", (e) => e.preventDefault(), { passive: false });
  }

  get empty() { return this.strokes.length === 0; }

  get penIsDown() { return this.current !== null; }

  get aspect() { return this.mode === "number" ? NUMBER_ASPECT : 1; }

  // A number pad is wider: switching shape clears the pad, since the drawing would be stretched.
  setMode(mode) {
    this.mode = mode;
    this.canvas.setAttribute("aria-label", LABELS[mode]);
    this.clear();
    this.fitToScreen();
  }

  undo() {
    if (this.empty) return;
    this.strokes.pop();
    this.changed();
  }

  clear() {
    this.strokes.length = 0;
    this.current = null;
    this.pointerId = null;
    this.changed();
  }

  exportPng() {
    const off = document.createElement("canvas");
    off.width = EXPORT_SIZE * this.aspect;
    off.height = EXPORT_SIZE;
    paint(off.getContext("2d"), off.width, EXPORT_SIZE, this.strokes); // black ink on transparent, as the model expects
    return off.toDataURL("image/png");
  }

  exportStrokes() {
    return strokesForApi(this.strokes, EXPORT_SIZE * this.aspect);
  }

  changed() {
    this.version++;
    this.redraw();
    this.onChange();
  }

  redraw() {
    cancelAnimationFrame(this.frame);
    this.frame = requestAnimationFrame(() => paint(this.ctx, this.canvas.width, this.canvas.height, this.strokes));
  }

  // The drawing buffer follows the element's size and the screen's pixel density, so strokes stay sharp.
  fitToScreen() {
    const rect = this.canvas.getBoundingClientRect();
    const width = Math.round(rect.width * (window.devicePixelRatio || 1));
    const height = Math.round(width / this.aspect);
    if (width > 0 && (this.canvas.width !== width || this.canvas.height !== height)) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    this.redraw();
  }

  point(e) {
    const r = this.canvas.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    const t = Math.max(0, Math.round(e.timeStamp - this.startedAt));
    return [clamp((e.clientX - r.left) / r.width), clamp((e.clientY - r.top) / r.height), t];
  }

  penDown(e) {
    // One pen at a time, and only the main mouse button: a second finger or a right click draws nothing.
    if (this.pointerId !== null || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    this.pointerId = e.pointerId;
    this.canvas.setPointerCapture(e.pointerId);
    if (this.empty) this.startedAt = e.timeStamp;
    this.current = [this.point(e)];
    this.strokes.push(this.current);
    this.changed();
  }

  penMove(e) {
    if (e.pointerId !== this.pointerId || !this.current) return;
    e.preventDefault();
    // The browser may batch several samples into one event: a fast stroke keeps its shape.
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) this.current.push(this.point(ev));
    this.version++;
    this.redraw();
    this.onPen();
  }

  penUp(e) {
    if (e.pointerId !== this.pointerId) return;
    this.pointerId = null;
    this.current = null;
    this.onPen();
  }
}
