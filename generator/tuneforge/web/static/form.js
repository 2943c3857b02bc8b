// tuneforge's web form: builds the questions from /api/form, sends the answers the user set to /api/plan on
// every change and shows the plan it returns. Everything is decided by the server; this file only displays.
"use strict";

const answers = {};      // the answers the user set (the rest are the plan's defaults, as with --set)
let sequence = 0;        // only the newest plan is shown
let timer = null;

const $ = (id) => document.getElementById(id);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "style") Object.assign(node.style, value);  // the CSSOM: the page's policy allows no inline style
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

async function call(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: body === undefined ? {} : {"Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json();
  if (!response.ok) throw Object.assign(new Error(data.error), {errors: data.errors || {}});
  return data;
}

function field(question) {
  const key = question.key;
  const box = element("div", {class: "q", id: `q-${key}`, "data-key": key});
  box.append(element("label", {class: "key", for: key, text: key}), element("span", {class: "origin", id: `origin-${key}`}));
  box.append(element("p", {class: "help", text: question.help + (question.range ? ` (${question.range})` : "")}));
  let input;
  if (question.kind === "choice") {
    input = element("select", {id: key, name: key});
    for (const choice of question.choices) {
      input.append(element("option", {value: choice.value, text: choice.title ? `${choice.value} - ${choice.title}` : choice.value}));
    }
  } else if (question.kind === "list") {
    input = element("div", {id: key, class: "options", role: "group"});
    for (const choice of question.choices) {
      const box = element("input", {type: "checkbox", name: key, value: choice.value, id: `${key}-${choice.value}`});
      input.append(element("label", {title: choice.title}, box, ` ${choice.value}`));
    }
  } else if (question.kind === "bool") {
    input = element("select", {id: key, name: key});
    input.append(element("option", {value: "true", text: "true"}), element("option", {value: "false", text: "false"}));
  } else {
    input = element("input", {type: "text", id: key, name: key, spellcheck: "false"});
    if (question.choices) {  // the model: catalog ids offered, anything typed accepted
      const list = element("datalist", {id: `${key}-choices`});
      for (const choice of question.choices) list.append(element("option", {value: choice.value, text: choice.title}));
      input.setAttribute("list", list.id);
      box.append(list);
    }
  }
  box.append(input, element("p", {class: "error", id: `error-${key}`, role: "alert"}));
  // typed numbers update the plan as they are typed (after a pause of 150 ms); a model id when it is complete
  // (it may be looked up on the hub); a choice at once
  const live = input.tagName === "INPUT" && key !== "model";
  input.addEventListener(live ? "input" : "change", () => {
    answers[key] = read(question, input);
    schedule(live ? 150 : 0);
  });
  return box;
}

function read(question, input) {
  if (question.kind === "list") return [...input.querySelectorAll("input:checked")].map((box) => box.value);
  return input.value;
}

function show(question, plan) {
  const input = $(question.key);
  if (question.kind === "list") {
    for (const box of input.querySelectorAll("input")) box.checked = plan.values[question.key].includes(box.value);
  } else if (document.activeElement !== input || !(question.key in answers)) {
    input.value = plan.shown[question.key];  // as it is typed: 8 GB, not 8.0
  }
}

function schedule(delay) {
  clearTimeout(timer);
  timer = setTimeout(refresh, delay);
}

async function refresh() {
  const mine = ++sequence;
  try {
    const plan = await call("/api/plan", {answers, dest: $("dest").value || null, files: false});
    if (mine !== sequence) return;
    display(plan);
    refreshFiles();
  } catch (error) {
    if (mine === sequence) $("message").textContent = error.message;
  }
}

// The file list comes after the plan: a new set of optional files takes a render (about a second). One request at
// a time, for the newest answers, so that a burst of changes cannot queue requests ahead of the next plan.
let filesBusy = false;
let filesWanted = false;

async function refreshFiles() {
  if (filesBusy) {
    filesWanted = true;
    return;
  }
  filesBusy = true;
  filesWanted = false;
  const mine = sequence;
  try {
    const plan = await call("/api/plan", {answers, dest: $("dest").value || null});
    if (mine === sequence) showFiles(plan.files);
  } catch (error) {
    // the plan request reports errors
  } finally {
    filesBusy = false;
    if (filesWanted || mine !== sequence) refreshFiles();
  }
}

function display(plan) {
  document.body.dataset.planned = String(sequence);
  for (const question of window.questions) {
    const key = question.key;
    show(question, plan);
    $(`q-${key}`).hidden = !plan.relevant.includes(key) && !(key in plan.errors);
    $(`origin-${key}`).textContent = plan.origins[key] === "form" ? "" : `(${plan.origins[key]})`;
    const problem = plan.problems.find((p) => p.key === key);
    const message = plan.errors[key] || (problem ? problem.reason : "");
    $(`error-${key}`).textContent = message;
    $(`q-${key}`).classList.toggle("invalid", Boolean(message));
  }
  const model = plan.model;
  $("plan-model").textContent = `${model.hf_id} (${model.architecture}, ${model.params_b}B parameters), ${plan.precision}`;
  $("verdict").textContent = plan.verdict;
  $("verdict").className = plan.fits ? "fits" : "nofit";
  drawBar(plan.memory);
  const suggestions = $("suggestions");
  suggestions.replaceChildren();
  if (plan.suggestions.length) suggestions.append(element("p", {text: "What would fit:"}));
  for (const suggestion of plan.suggestions) {
    const button = element("button", {type: "button", class: "suggestion", text: `take ${suggestion.label}`});
    button.addEventListener("click", () => {
      Object.assign(answers, suggestion.changes);
      schedule(0);
    });
    suggestions.append(button);
  }
  $("problems").replaceChildren(...plan.problems.map((p) => element("li", {text: `${p.key}: ${p.reason}` +
    (p.alternatives.length ? ` What would work: ${p.alternatives.join("; ")}.` : "")})));
  const blocked = Object.keys(plan.errors).length > 0 || plan.problems.length > 0;
  for (const id of ["create", "preview", "update"]) $(id).disabled = blocked;
  if (!$("dest").value && plan.dest) $("dest").value = plan.dest;
}

function drawBar(memory) {
  const scale = Math.max(memory.total_gb, memory.available_gb) || 1;
  const bar = $("bar");
  bar.replaceChildren();
  memory.parts.forEach((part, i) => {
    bar.append(element("div", {class: `part c${i}`, style: {width: `${100 * part.gb / scale}%`},
                               title: `${part.name}: ${part.gb} GB`}));
  });
  bar.append(element("div", {class: "limit", style: {left: `calc(${100 * memory.available_gb / scale}% - 2px)`},
                             title: `${memory.available_gb} GB per device`}));
  $("legend").replaceChildren(...memory.parts.map((part, i) =>
    element("li", {}, element("span", {class: `c${i}`}), `${part.name} ${part.gb} GB`)),
    element("li", {text: `${memory.total_gb} of ${memory.available_gb} GB on each of ${memory.devices} device(s)`}));
}

function showFiles(files) {
  $("files").querySelector("summary").textContent = `Files (${files.length})`;
  $("file-list").replaceChildren(...files.map((name) => element("li", {text: name})));
}

function showErrors(error) {
  $("message").textContent = error.message;
  $("error-dest").textContent = error.errors.dest || "";
  for (const [key, message] of Object.entries(error.errors)) {
    if ($(`error-${key}`)) $(`error-${key}`).textContent = message;
  }
}

async function act(path, done) {
  $("message").textContent = "working...";
  try {
    done(await call(path, {answers, dest: $("dest").value || null}));
  } catch (error) {
    showErrors(error);
  }
}

function setMode(newMode, dest) {
  $("mode").textContent = newMode === "update" ? `updating ${dest}` : "a new fine-tuning workspace";
  $("create").hidden = newMode === "update";
  $("preview").hidden = $("update").hidden = $("open").hidden = newMode !== "update";
  $("dest").readOnly = newMode === "update";
  if (dest) $("dest").value = dest;
}

async function start() {
  const form = await call("/api/form");
  window.questions = form.groups.flatMap((group) => group.questions);
  for (const group of form.groups) {
    const set = element("fieldset", {}, element("legend", {text: group.title}));
    for (const question of group.questions) set.append(field(question));
    $("questions").append(set);
  }
  setMode(form.mode, form.dest);
  $("dest").addEventListener("input", () => schedule(150));
  $("create").addEventListener("click", () => act("/api/create", (result) => {
    $("message").textContent = `${result.message}. Next: cd into it, then bash setup.sh and .venv/bin/python smoke.py`;
    setMode("update", result.dest);
  }));
  $("preview").addEventListener("click", () => act("/api/update/preview", (result) => {
    $("message").textContent = `updating would change ${result.changed.length + result.removed.length} file(s)` +
      (result.conflicts.length ? `, with conflicts in ${result.conflicts.join(", ")}` : "");
    $("diff").textContent = result.diff || "(no changes)";
    $("diff").hidden = false;
  }));
  $("update").addEventListener("click", () => act("/api/update", (result) => {
    $("message").textContent = `updated: ${result.changed.length + result.removed.length} file(s) changed` +
      (result.conflicts.length ? `, conflicts marked in ${result.conflicts.join(", ")}` : "") + ". Review with git diff, then commit.";
    $("diff").hidden = true;
  }));
  $("open").addEventListener("click", () => act("/api/open", (result) => { $("message").textContent = result.message; }));
  schedule(0);
}

start().catch((error) => { $("message").textContent = `cannot load the form: ${error.message}`; });
