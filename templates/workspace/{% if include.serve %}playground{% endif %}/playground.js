// The playground serve.py serves at /: chat with one model, or send the same conversation to every model it
// serves (compare), streamed from /v1/chat/completions, with tokens per second under each answer.
"use strict";

const $ = (id) => document.getElementById(id);
let history = {};  // model name -> [{role, content}], one conversation per column
let busy = false;
let topP = 1;  // configs/train.yaml's generation.top_p, sent with the page's temperature (the page has no control for it)

function column(name) {
  let box = document.querySelector(`.column[data-model="${CSS.escape(name)}"]`);
  if (!box) {
    box = document.createElement("div");
    box.className = "column";
    box.dataset.model = name;
    const title = document.createElement("h2");
    title.textContent = name;
    box.append(title);
    $("answers").append(box);
  }
  return box;
}

function turn(box, role, text, picture) {
  const node = document.createElement("div");
  node.className = `turn ${role}`;
  node.textContent = text;
  if (picture) {  // the picture sent with the message, shown above its text
    const image = document.createElement("img");
    image.src = picture;
    image.alt = "the picture sent";
    node.prepend(image);
  }
  box.append(node);
  return node;
}

function dataUrl(file) {  // a chosen picture as the data: URL OpenAI's image_url part carries
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function shownModels() {
  return $("compare").checked ? [...$("model").options].map((o) => o.value) : [$("model").value];
}

function layout() {
  const names = shownModels();
  for (const box of document.querySelectorAll(".column")) box.hidden = !names.includes(box.dataset.model);
  names.forEach(column);
}

async function ask(name, prompt, picture) {
  const box = column(name);
  const messages = history[name] = history[name] || [];
  if (!messages.length && $("system").value.trim()) messages.push({role: "system", content: $("system").value});
  const content = picture ? [{type: "image_url", image_url: {url: picture}}, {type: "text", text: prompt}] : prompt;
  messages.push({role: "user", content});
  turn(box, "user", prompt, picture);
  const answer = turn(box, "assistant", "");
  const speed = document.createElement("div");
  speed.className = "speed";
  box.append(speed);
  const started = performance.now();
  let first = null;
  let usage = null;
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({model: name, messages, stream: true, stream_options: {include_usage: true},
                          temperature: Number($("temperature").value), top_p: topP, max_tokens: Number($("max-tokens").value)}),
  });
  if (!response.ok) {
    messages.pop();
    throw new Error(`${name}: ${(await response.json()).error.message}`);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += value;
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const event of events) {
      const data = event.replace(/^data: /, "");
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.usage) usage = chunk.usage;
      const piece = chunk.choices.length ? chunk.choices[0].delta.content : "";
      if (piece) {
        first = first ?? performance.now();
        answer.textContent += piece;
      }
    }
  }
  const ended = performance.now();
  messages.push({role: "assistant", content: answer.textContent});
  const tokens = usage ? usage.completion_tokens : 0;
  const decoding = first !== null && tokens > 1 ? (tokens - 1) / ((ended - first) / 1000) : 0;
  speed.textContent = `${tokens} tokens, ${decoding.toFixed(1)} tokens/s` +
    (first !== null ? `, first token after ${Math.round(first - started)} ms` : "");
  speed.dataset.tokens = String(tokens);
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || busy) return;
  busy = true;
  $("send").disabled = true;
  $("error").textContent = "";
  try {
    const file = $("picture").files[0];
    const picture = file ? await dataUrl(file) : null;
    for (const name of shownModels()) await ask(name, prompt, picture);  // one after another: the server runs one at a time
    $("prompt").value = "";
    $("picture").value = "";
  } catch (error) {
    $("error").textContent = error.message;
  } finally {
    busy = false;
    $("send").disabled = false;
  }
}

async function start() {
  const settings = await (await fetch("/v1/playground")).json();
  for (const name of settings.models) $("model").append(new Option(name, name));
  $("system").value = settings.system;
  $("temperature").value = settings.temperature;
  topP = settings.top_p;
  $("max-tokens").value = settings.max_tokens;
  $("prompt").value = settings.prompt;
  $("compare").disabled = settings.models.length < 2;
  $("picture-label").hidden = !settings.images;  // a model that reads pictures: one may go with each message
  $("model").addEventListener("change", layout);
  $("compare").addEventListener("change", layout);
  $("clear").addEventListener("click", () => { history = {}; $("answers").replaceChildren(); layout(); });
  $("ask").addEventListener("submit", send);
  layout();
  document.body.dataset.ready = "true";
}

start().catch((error) => { $("error").textContent = `cannot load the playground: ${error.message}`; });
