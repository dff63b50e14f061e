// The vae-dogs page: plain JavaScript against the service's own JSON/PNG API, no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
let breeds = [];
let photo = null; // the uploaded File, kept for ancestry and transfer

function pretty(name) {
  return name.replaceAll("_", " ");
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
  } catch (_) { /* not JSON */ }
  return `the service answered ${response.status} ${response.statusText}`;
}

async function call(url, options, errorBox) {
  errorBox.textContent = "";
  const response = await fetch(url, options);
  if (!response.ok) {
    errorBox.textContent = await errorMessage(response);
    throw new Error(errorBox.textContent);
  }
  return response;
}

async function showImage(img, response) {
  const old = img.src;
  img.src = URL.createObjectURL(await response.blob());
  img.hidden = false;
  img.dataset.updates = String(Number(img.dataset.updates || 0) + 1);
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}

function fillSelect(select, selected) {
  for (const name of breeds) {
    const option = new Option(pretty(name), name, false, name === selected);
    select.add(option);
  }
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// --- mix ----------------------------------------------------------------------------------
function mixWeights() {
  const weights = {};
  for (const row of $("mix-rows").children) {
    const name = row.querySelector("select").value;
    weights[name] = (weights[name] || 0) + Number(row.querySelector("input[type=range]").value);
  }
  return weights;
}

// The mix lives in the page's address (#mix=beagle:50,samoyed:50&seed=7&variety=1), so a new breed can be shared as
// a link and reopens exactly; the fragment never reaches the server.
function writeMixState(weights) {
  const state = new URLSearchParams({
    mix: Object.entries(weights).map(([name, w]) => `${name}:${w}`).join(","),
    seed: $("mix-seed").value,
    variety: $("mix-temperature").value,
  });
  history.replaceState(null, "", `#${state}`);
  $("mix-link").href = location.href;
}

function readMixState() {
  const state = new URLSearchParams(location.hash.slice(1));
  const rows = (state.get("mix") || "").split(",").filter(Boolean).map((part) => {
    const [name, weight] = part.split(":");
    return [name, Math.min(100, Math.max(0, Math.round(Number(weight))))];
  });
  const unknown = rows.filter(([name]) => !breeds.includes(name)).map(([name]) => name);
  const known = rows.filter(([name, weight]) => breeds.includes(name) && Number.isFinite(weight));
  const seed = Number(state.get("seed"));
  const variety = Number(state.get("variety"));
  return {
    unknown,
    rows: known,
    seed: state.has("seed") && Number.isInteger(seed) && seed >= 0 ? seed : null,
    variety: state.has("variety") && variety >= 0 && variety <= 1.5 ? variety : null,
  };
}

// Only the latest request's dog is shown; a slower earlier one is cancelled (the service drops work whose client left).
let mixInFlight = null;

async function updateMix() {
  const weights = mixWeights();
  const total = Object.values(weights).reduce((a, b) => a + b, 0);
  if (total <= 0) {
    $("global-error").textContent = "Give at least one breed a weight above zero.";
    return;
  }
  writeMixState(weights);
  const body = { breeds: weights, seed: Number($("mix-seed").value), temperature: Number($("mix-temperature").value), scale: 4 };
  if (mixInFlight) mixInFlight.abort();
  const controller = new AbortController();
  mixInFlight = controller;
  const options = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal: controller.signal };
  try {
    const response = await call("/mix", options, $("global-error"));
    await showImage($("mix-image"), response);
  } catch (err) {
    if (err.name === "AbortError") return; // a newer request took over
    throw err;
  } finally {
    if (mixInFlight === controller) mixInFlight = null;
  }
  $("mix-caption").textContent = Object.entries(weights).filter(([, w]) => w > 0)
    .map(([name, w]) => `${pretty(name)} ${Math.round((100 * w) / total)} %`).join(" + ") + ` · seed ${body.seed}`;
}
const updateMixSoon = debounce(() => updateMix().catch(() => {}), 150);

function addMixRow(name, weight) {
  const index = $("mix-rows").children.length + 1;
  const row = document.createElement("div");
  row.className = "row";
  row.innerHTML = `<label for="mix-breed-${index}">Breed ${index}</label><select id="mix-breed-${index}"></select>
    <label for="mix-weight-${index}">weight</label>
    <input type="range" id="mix-weight-${index}" min="0" max="100" value="${weight}">
    <output for="mix-weight-${index}">${weight}</output>
    <button type="button" aria-label="remove breed ${index}">Remove</button>`;
  fillSelect(row.querySelector("select"), name);
  const slider = row.querySelector("input");
  slider.addEventListener("input", () => { row.querySelector("output").textContent = slider.value; updateMixSoon(); });
  row.querySelector("select").addEventListener("change", updateMixSoon);
  row.querySelector("button").addEventListener("click", () => {
    if ($("mix-rows").children.length > 1) { row.remove(); updateMixSoon(); }
  });
  $("mix-rows").append(row);
}

// --- samples and morph ----------------------------------------------------------------------
async function updateSamples() {
  const breed = $("sample-breed").value;
  const seed = Math.floor(Math.random() * 2 ** 31);
  const query = new URLSearchParams({ n: "16", scale: "2", seed: String(seed) });
  if (breed) query.set("breed", breed);
  await showImage($("sample-image"), await call(`/sample?${query}`, {}, $("global-error")));
}

async function updateMorph() {
  const steps = Number($("morph-steps").value);
  const body = { start: { breeds: { [$("morph-start").value]: 1 } }, end: { breeds: { [$("morph-end").value]: 1 } },
    steps, seed: Number($("mix-seed").value), scale: 2, format: "png" };
  const response = await call("/morph", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }, $("global-error"));
  await showImage($("morph-image"), response);
}

// --- your dog -----------------------------------------------------------------------------------
function drawBars(list, rows) {
  list.replaceChildren();
  for (const [name, value] of rows) {
    const item = document.createElement("li");
    const percent = (100 * value).toFixed(1);
    const label = document.createElement("span");
    label.textContent = pretty(name); // breed names are data: never parsed as HTML
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, 100 * value)}%`;
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", `${percent} percent`);
    const number = document.createElement("span");
    number.textContent = `${percent} %`;
    item.append(label, bar, number);
    list.append(item);
  }
}

function photoForm(extra = {}) {
  const form = new FormData();
  form.append("file", photo);
  for (const [key, value] of Object.entries(extra)) form.append(key, value);
  return form;
}

async function analysePhoto() {
  photo = $("photo-file").files[0] || null;
  for (const id of ["identify-bars", "ancestry-bars"]) $(id).replaceChildren();
  $("ancestry-fit").textContent = $("identify-note").textContent = "";
  $("ancestry-image").hidden = $("transfer-image").hidden = true;
  $("transfer-button").disabled = true;
  if (!photo) return;
  const box = $("photo-error");
  const identified = await (await call("/identify?top_k=5", { method: "POST", body: photoForm() }, box)).json();
  drawBars($("identify-bars"), identified.breeds.map((b) => [b.breed, b.probability]));
  // A cat, a car or a drawing still gets the nearest breeds: say plainly that they are no identification.
  $("identify-note").textContent = identified.looks_like_a_dog ? "" : identified.note;
  $("transfer-button").disabled = false;
  const ancestry = await (await call("/ancestry?max_breeds=3", { method: "POST", body: photoForm() }, box)).json();
  drawBars($("ancestry-bars"), ancestry.composition.map((b) => [b.breed, b.weight]));
  $("ancestry-fit").textContent = `typicality ${ancestry.fit.score.toFixed(2)} (about 0.5 for a typical dog of this mix, near 0 when the mix does not explain the photo)`;
  // A dog of that mix: /mix with seed 0 draws what /ancestry?image=true does, without solving the ancestry again (seconds).
  const mixBody = { breeds: Object.fromEntries(ancestry.composition.map((b) => [b.breed, b.weight])), seed: 0, scale: 3 };
  await showImage($("ancestry-image"), await call("/mix", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(mixBody) }, box));
}

async function transferPhoto() {
  const form = photoForm({ breeds: JSON.stringify({ [$("transfer-breed").value]: 1 }) });
  await showImage($("transfer-image"), await call("/transfer?scale=3", { method: "POST", body: form }, $("photo-error")));
}

// --- start ----------------------------------------------------------------------------------------
async function start() {
  const list = await (await call("/breeds", {}, $("global-error"))).json();
  breeds = list.breeds.map((b) => b.name);
  const info = await (await fetch("/info")).json().catch(() => ({}));
  $("model-info").textContent = `${breeds.length} breeds` + (info.device ? ` · running on ${info.device}` : "");
  fillSelect($("sample-breed"));
  fillSelect($("transfer-breed"), breeds[breeds.length - 1]);
  fillSelect($("morph-start"), breeds[0]);
  fillSelect($("morph-end"), breeds[breeds.length - 1]);
  const state = readMixState();
  if (state.seed !== null) $("mix-seed").value = state.seed;
  if (state.variety !== null) {
    $("mix-temperature").value = state.variety;
    $("mix-temperature-value").textContent = Number($("mix-temperature").value).toFixed(2);
  }
  if (state.rows.length) {
    for (const [name, weight] of state.rows) addMixRow(name, weight);
  } else {
    // Two breeds that look unalike, when the model knows them; otherwise the first two.
    const [first, second] = ["beagle", "samoyed"].every((b) => breeds.includes(b)) ? ["beagle", "samoyed"] : [breeds[0], breeds[Math.min(1, breeds.length - 1)]];
    addMixRow(first, 50);
    addMixRow(second, 50);
  }
  $("add-breed").addEventListener("click", () => { addMixRow(breeds[0], 50); updateMixSoon(); });
  $("shuffle-seed").addEventListener("click", () => { $("mix-seed").value = Math.floor(Math.random() * 100000); updateMixSoon(); });
  $("mix-seed").addEventListener("change", updateMixSoon);
  $("mix-temperature").addEventListener("input", () => {
    $("mix-temperature-value").textContent = Number($("mix-temperature").value).toFixed(2);
    updateMixSoon();
  });
  $("sample-button").addEventListener("click", () => updateSamples().catch(() => {}));
  $("morph-button").addEventListener("click", () => updateMorph().catch(() => {}));
  $("photo-file").addEventListener("change", () => analysePhoto().catch(() => {}));
  $("transfer-button").addEventListener("click", () => transferPhoto().catch(() => {}));
  await Promise.all([updateMix(), updateSamples()]);
  if (state.unknown.length) {
    $("global-error").textContent = `The link names breeds this model does not know: ${state.unknown.join(", ")}`;
  }
}

start().catch((err) => { $("global-error").textContent = `The page could not start: ${err.message}`; });
