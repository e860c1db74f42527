// digitlab's page: a drawing pad read as you draw, and photos read on drop. No libraries.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const INK = "#1b1f24";
const PAPER = "#fdfcf8";
const DEBOUNCE_MS = 120; // predictions while drawing: at most one per pause this long

// --- the drawing pad -------------------------------------------------------------------------
// Strokes are kept as points (x, y, pressure) in the pad's own pixels, so undo can redraw.
const strokes = [];
let current = null;

function penWidth(pressure) {
  // A pen on paper: a fixed width for mouse and touch (pressure 0.5), thinner or bolder with a
  // stylus's pressure. 1/14 of the pad: MNIST's strokes are about that fraction of its 20 px box.
  return (pad.width / 14) * (0.6 + 0.8 * pressure);
}

function drawStroke(stroke) {
  const pts = stroke.points;
  ctx.strokeStyle = INK;
  ctx.fillStyle = INK;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  if (pts.length === 1) {
    ctx.beginPath();
    ctx.arc(pts[0].x, pts[0].y, penWidth(pts[0].p) / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  // Quadratic curves through the midpoints: smooth like ink, not a polyline of segments.
  for (let i = 1; i < pts.length; i++) {
    const a = pts[i - 1], b = pts[i];
    const start = i === 1 ? a : { x: (pts[i - 2].x + a.x) / 2, y: (pts[i - 2].y + a.y) / 2 };
    const end = i === pts.length - 1 ? b : { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
    ctx.lineWidth = penWidth((a.p + b.p) / 2);
    ctx.beginPath();
    ctx.moveTo(start.x, start.y);
    ctx.quadraticCurveTo(a.x, a.y, end.x, end.y);
    ctx.stroke();
  }
}

function redraw() {
  ctx.fillStyle = PAPER;
  ctx.fillRect(0, 0, pad.width, pad.height);
  strokes.forEach(drawStroke);
  if (current) drawStroke(current);
}

function point(event) {
  const box = pad.getBoundingClientRect();
  const pressure = event.pointerType === "pen" && event.pressure > 0 ? event.pressure : 0.5;
  return {
    x: ((event.clientX - box.left) / box.width) * pad.width,
    y: ((event.clientY - box.top) / box.height) * pad.height,
    p: pressure,
  };
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  current = { points: [point(event)] };
  redraw();
});

pad.addEventListener("pointermove", (event) => {
  if (!current) return;
  event.preventDefault();
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) current.points.push(point(e));
  redraw();
  schedulePrediction();
});

function endStroke(event) {
  if (!current) return;
  event.preventDefault();
  strokes.push(current);
  current = null;
  redraw();
  predictNow();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function undo() {
  strokes.pop();
  redraw();
  strokes.length ? predictNow() : showEmpty();
}

function clearPad() {
  strokes.length = 0;
  current = null;
  redraw();
  showEmpty();
}

document.getElementById("undo").addEventListener("click", undo);
document.getElementById("clear").addEventListener("click", clearPad);
pad.addEventListener("keydown", (event) => {
  if (event.key === "Escape") { clearPad(); event.preventDefault(); }
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z") { undo(); event.preventDefault(); }
});

// --- predictions -----------------------------------------------------------------------------
const result = document.getElementById("result");
const placeholder = document.getElementById("placeholder");
const PLACEHOLDER = placeholder.textContent;
const digitOut = document.getElementById("digit");
const confidenceOut = document.getElementById("confidence");
const bars = document.getElementById("bars");
const seen = document.getElementById("seen").getContext("2d");

const barItems = [];
for (let d = 0; d < 10; d++) {
  const li = document.createElement("li");
  li.dataset.digit = String(d);
  li.innerHTML = `<span class="name">${d}</span><span class="track"><span class="fill"></span></span>` +
    `<span class="value"></span>`;
  bars.appendChild(li);
  barItems.push(li);
}

let timer = null;
let sequence = 0; // answers to older requests than the newest shown are dropped

function schedulePrediction() {
  clearTimeout(timer);
  timer = setTimeout(predictNow, DEBOUNCE_MS);
}

async function predictNow() {
  clearTimeout(timer);
  const all = current ? strokes.concat([current]) : strokes;
  if (!all.length) return showEmpty();
  const mine = ++sequence;
  try {
    const answer = await postJSON("api/predict?input=true", { image: pad.toDataURL("image/png") });
    if (mine === sequence) showPrediction(answer);
  } catch (error) {
    if (mine === sequence) showProblem(error.message);
  }
}

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  return answerOf(response);
}

async function answerOf(response) {
  let payload;
  try { payload = await response.json(); } catch { payload = {}; }
  if (!response.ok) throw new Error(payload.error || `the server answered ${response.status}`);
  return payload;
}

function showPrediction(answer) {
  result.classList.remove("empty");
  digitOut.textContent = answer.digit;
  confidenceOut.textContent = `${(answer.confidence * 100).toFixed(1)}% sure`;
  answer.probabilities.forEach((p, d) => {
    const li = barItems[d];
    li.dataset.probability = String(p);
    li.querySelector(".fill").style.width = `${(p * 100).toFixed(2)}%`;
    li.querySelector(".value").textContent = `${(p * 100).toFixed(1)}%`;
    li.classList.toggle("top", String(d) === answer.digit);
    li.setAttribute("aria-label", `${d}: ${(p * 100).toFixed(1)} percent`);
  });
  const image = seen.createImageData(28, 28);
  answer.input.forEach((row, y) => row.forEach((v, x) => {
    const i = 4 * (28 * y + x);
    image.data[i] = image.data[i + 1] = image.data[i + 2] = v;
    image.data[i + 3] = 255;
  }));
  seen.putImageData(image, 0, 0);
}

// Until there is a reading: a line saying what to do, empty bars, and no digit or 28x28 image.
function showEmpty() {
  sequence++;
  result.classList.add("empty");
  placeholder.textContent = PLACEHOLDER;
  placeholder.classList.remove("error");
  digitOut.textContent = "";
  confidenceOut.textContent = "";
  barItems.forEach((li) => {
    li.querySelector(".fill").style.width = "0";
    li.querySelector(".value").textContent = "";
    li.classList.remove("top");
    li.removeAttribute("aria-label");
    delete li.dataset.probability;
  });
  seen.clearRect(0, 0, 28, 28);
}

function showProblem(message) {
  showEmpty();
  placeholder.textContent = message;
  placeholder.classList.add("error");
}

// --- photos ----------------------------------------------------------------------------------
const drop = document.getElementById("drop");
const fileInput = document.getElementById("file");
const status = document.getElementById("photo-status");
const photoResult = document.getElementById("photo-result");
const photoText = document.getElementById("photo-text");
const photoLines = document.getElementById("photo-lines");
const annotated = document.getElementById("annotated");
const UNSURE = "?"; // what the service reads a digit it is unsure of as

function percent(p) {
  return `${Math.floor(p * 100)}%`; // floored: 99.96% is not shown as a certain 100%
}

// One digit read: its reading and confidence; an unsure one ("?") in amber with its best guess.
function digitChip(digit) {
  const chip = document.createElement("li");
  const unsure = digit.text === UNSURE;
  const best = digit.candidates && digit.candidates[0];
  const mark = !unsure && digit.confidence === 0; // punctuation: told by its shape, not classified
  chip.className = "chip" + (unsure ? " unsure" : "") + (mark ? " mark" : "");
  chip.dataset.confidence = String(digit.confidence);
  const text = document.createElement("b");
  text.textContent = digit.text;
  const note = document.createElement("small");
  if (mark) {
    note.textContent = "mark";
    chip.setAttribute("aria-label", `${digit.text}: punctuation`);
  } else if (unsure && best) {
    note.textContent = `${best[0]}? ${percent(best[1])}`;
    chip.setAttribute("aria-label", `unsure: perhaps ${best[0]}, ${percent(best[1])} sure`);
  } else if (unsure) {
    note.textContent = "no digit";
    chip.setAttribute("aria-label", "unsure: no digit");
  } else {
    note.textContent = percent(digit.confidence);
    chip.setAttribute("aria-label", `${digit.text}: ${percent(digit.confidence)} sure`);
  }
  chip.append(text, note);
  return chip;
}

function showReading(reading) {
  photoText.replaceChildren(...Array.from(reading.text, (c) => {
    if (c !== UNSURE) return document.createTextNode(c);
    const span = document.createElement("span");
    span.className = "unsure";
    span.textContent = c;
    return span;
  }));
  photoLines.replaceChildren(...reading.lines.map((line) => {
    const item = document.createElement("li");
    const digits = document.createElement("ol");
    digits.className = "chips";
    digits.append(...line.digits.map(digitChip));
    item.appendChild(digits);
    return item;
  }));
  photoResult.hidden = reading.lines.length === 0;
}

async function readPhoto(file) {
  if (!file) return;
  status.className = "";
  status.textContent = `Reading ${file.name}…`;
  photoResult.hidden = true;
  photoText.textContent = "";
  photoLines.replaceChildren();
  annotated.hidden = true;
  try {
    const response = await fetch("api/read?annotate=true", {
      method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file,
    });
    const reading = await answerOf(response);
    const all = reading.lines.flatMap((line) => line.digits);
    const unsure = all.filter((d) => d.text === UNSURE).length;
    status.textContent = !reading.lines.length ? `No digits found in ${file.name}.`
      : `${reading.lines.length} line(s), ${all.length} character(s) read in ${file.name}` +
        (unsure ? `; ${unsure} unsure, marked ? in amber with the model's best guess.` : ".");
    showReading(reading);
    if (reading.annotated) {
      annotated.src = reading.annotated;
      annotated.hidden = false;
    }
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  }
}

fileInput.addEventListener("change", () => readPhoto(fileInput.files[0]));
["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
  event.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  readPhoto(event.dataTransfer.files[0]);
});

// --- the model -------------------------------------------------------------------------------
(async () => {
  const info = document.getElementById("model-info");
  try {
    const { models } = await answerOf(await fetch("api/models"));
    const m = models[0];
    const accuracy = m.evaluation && m.evaluation.accuracy != null
      ? `, ${(m.evaluation.accuracy * 100).toFixed(2)}% on the ${m.evaluation.dataset} ${m.evaluation.split} set` : "";
    info.textContent = `Model: ${m.name}${m.bundled ? " (bundled)" : ""}, ` +
      `${m.parameters.toLocaleString("en")} parameters${accuracy}.`;
  } catch (error) {
    info.className = "error";
    info.textContent = `The model could not be reached: ${error.message}`;
  }
})();

redraw();
