// The qwenvl-serve playground: builds an OpenAI chat-completions request from the form,
// streams the answer over server-sent events and shows usage and timings.
// Images and a video are read as data: URLs and sent untouched; the server normalizes
// images and samples the video.
"use strict";

(() => {
  const KEY_STORAGE = "qwenvl-serve.api-key";
  const NORMALIZED_HEADER = "x-qwenvl-normalized-images";
  const VIDEO_HEADER = "x-qwenvl-video";

  const byId = (id) => document.getElementById(id);
  const el = {
    form: byId("request-form"),
    dropZone: byId("drop-zone"),
    imageInput: byId("image-input"),
    imageList: byId("image-list"),
    style: byId("style"),
    lang: byId("lang"),
    prompt: byId("prompt"),
    model: byId("model"),
    modelOptions: byId("model-options"),
    temperature: byId("temperature"),
    maxTokens: byId("max-tokens"),
    apiKey: byId("api-key"),
    send: byId("send"),
    stop: byId("stop"),
    error: byId("error"),
    answer: byId("answer"),
    reasoningBox: byId("reasoning-box"),
    reasoning: byId("reasoning"),
    promptTokens: byId("prompt-tokens"),
    completionTokens: byId("completion-tokens"),
    ttft: byId("ttft"),
    totalTime: byId("total-time"),
    imageSizes: byId("image-sizes"),
  };

  const state = { images: [], templates: null, controller: null, nextId: 1 };

  // Relative to the page, so the playground also works behind a path prefix.
  const apiUrl = (path) => new URL(path, document.baseURI).toString();
  // The API paths come from the server's route table (relative: they work behind prefixes).
  const routes = fetch(apiUrl("playground/routes.json")).then((response) => response.json());
  const routeUrl = async (name) => apiUrl((await routes)[name]);

  function authHeaders() {
    const key = el.apiKey.value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function showError(message) {
    el.error.textContent = message;
    el.error.hidden = false;
  }

  function clearError() {
    el.error.textContent = "";
    el.error.hidden = true;
  }

  function formatMs(ms) {
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
  }

  function formatBytes(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  // The server's own words: error.message of an OpenAI- or Google-style error body.
  async function serverMessage(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      if (body && body.error && typeof body.error.message === "string") return body.error.message;
      if (body && typeof body.message === "string") return body.message;
      if (body && typeof body.detail === "string") return body.detail;
    } catch (_) {
      // not JSON: fall through to the status line
    }
    return `The server answered ${response.status} ${response.statusText}`.trim();
  }

  // ---- prompt templates -------------------------------------------------------------

  function templateText() {
    const style = el.style.value;
    if (!style || !state.templates) return null;
    const template = state.templates[el.lang.value][style];
    const count = state.images.length;
    return count > 1 ? template.group.replaceAll("{count}", String(count)) : template.one;
  }

  function applyTemplate() {
    const text = templateText();
    if (text !== null) el.prompt.value = text;
  }

  async function loadTemplates() {
    try {
      const response = await fetch(apiUrl("playground/templates.json"));
      if (response.ok) state.templates = await response.json();
    } catch (_) {
      state.templates = null;
    }
    applyTemplate();
  }

  // ---- models -----------------------------------------------------------------------

  async function loadModels() {
    let response;
    try {
      response = await fetch(await routeUrl("models"), { headers: authHeaders() });
    } catch (_) {
      showError("Could not reach the server to list its models.");
      return;
    }
    if (!response.ok) {
      showError(`Listing models failed: ${await serverMessage(response)}`);
      return;
    }
    const body = await response.json();
    const ids = (body.data || []).map((model) => model.id).filter((id) => typeof id === "string");
    el.modelOptions.replaceChildren(...ids.map((id) => new Option(id, id)));
    if (!el.model.value && ids.length) el.model.value = ids[0];
    if (el.error.textContent.startsWith("Listing models failed")) clearError();
  }

  // ---- images -----------------------------------------------------------------------

  function readAsDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  // Only measured, never resized: the browser may not decode every format the server does.
  function measure(url) {
    return new Promise((resolve) => {
      const image = new Image();
      image.onload = () => resolve({ width: image.naturalWidth, height: image.naturalHeight });
      image.onerror = () => resolve(null);
      image.src = url;
    });
  }

  function measureVideo(url) {
    return new Promise((resolve) => {
      const video = document.createElement("video");
      video.preload = "metadata";
      video.onloadedmetadata = () =>
        resolve({ width: video.videoWidth, height: video.videoHeight, seconds: video.duration });
      video.onerror = () => resolve(null);
      video.src = url;
    });
  }

  const kindOf = (file) => (file.type.startsWith("video/") ? "video" : "image");

  async function addFiles(files) {
    clearError();
    for (const file of files) {
      if (file.type && !file.type.startsWith("image/") && !file.type.startsWith("video/")) {
        showError(`${file.name} is neither an image nor a video.`);
        continue;
      }
      const kind = kindOf(file);
      if (kind === "video" && state.images.some((item) => item.kind === "video")) {
        showError("One video per request: remove the other video first.");
        continue;
      }
      const dataUrl = await readAsDataUrl(file);
      const size = await (kind === "video" ? measureVideo(dataUrl) : measure(dataUrl));
      const item = { id: state.nextId++, kind, name: file.name, bytes: file.size, dataUrl, size };
      state.images.push(item);
    }
    renderImages();
    applyTemplate();
  }

  function removeImage(id) {
    const index = state.images.findIndex((image) => image.id === id);
    state.images.splice(index, 1);
    renderImages();
    applyTemplate();
    // Keep the keyboard user in the list: the next remove button, else the picker.
    const buttons = el.imageList.querySelectorAll("button");
    (buttons[Math.min(index, buttons.length - 1)] || el.imageInput).focus();
  }

  function sizeText(size) {
    if (!size) return "size unknown";
    const seconds = Number.isFinite(size.seconds) ? `, ${size.seconds.toFixed(1)} s` : "";
    return `${size.width}×${size.height}${seconds}`;
  }

  function renderImages() {
    el.imageList.replaceChildren(
      ...state.images.map((image) => {
        const item = document.createElement("li");
        const thumb = document.createElement(image.kind === "video" ? "video" : "img");
        thumb.src = image.dataUrl;
        if (image.kind === "video") thumb.muted = true;
        else thumb.alt = "";
        const text = document.createElement("span");
        text.className = "image-name";
        text.textContent = `${image.name} · ${sizeText(image.size)} · ${formatBytes(image.bytes)}`;
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "button small";
        remove.textContent = "Remove";
        remove.setAttribute("aria-label", `Remove ${image.name}`);
        remove.addEventListener("click", () => removeImage(image.id));
        item.append(thumb, text, remove);
        return item;
      }),
    );
  }

  // "192x128;frames=120;tokens=1972;...": what the server made of the video.
  function videoText(header) {
    if (!header) return "not reported by the server";
    const [size, ...fields] = header.split(";");
    const info = Object.fromEntries(fields.map((field) => field.split("=", 2)));
    const tokens = Number(info.tokens).toLocaleString("en-US");
    return `${info.frames} frames of ${size.replace("x", "×")}, ${tokens} tokens`;
  }

  // "2048x1536,640x480": one size per image, in request order, from the server.
  function showImageSizes(header, images, video) {
    const normalized = header ? header.split(",").map((size) => size.trim().replace("x", "×")) : [];
    let imageIndex = 0;
    const items = images.map((image) => {
      const item = document.createElement("li");
      const reported = image.kind === "video" ? videoText(video) : normalized[imageIndex++];
      const after = reported || "not reported by the server";
      item.textContent = `${image.name}: ${sizeText(image.size)} → ${after}`;
      return item;
    });
    if (!items.length) items.push(Object.assign(document.createElement("li"), { textContent: "no images" }));
    el.imageSizes.replaceChildren(...items);
  }

  // ---- streaming --------------------------------------------------------------------

  // Calls onEvent with each JSON event of a server-sent-events body until [DONE].
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const boundary = /\r?\n\r?\n/;
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let match;
      while ((match = boundary.exec(buffer)) !== null) {
        const block = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        const data = block
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        let event;
        try {
          event = JSON.parse(data);
        } catch (_) {
          continue;
        }
        onEvent(event);
      }
      if (done) return;
    }
  }

  function resetAnswer() {
    clearError();
    el.answer.textContent = "";
    el.reasoning.textContent = "";
    el.reasoningBox.hidden = true;
    for (const field of [el.promptTokens, el.completionTokens, el.ttft, el.totalTime]) {
      field.textContent = "–";
    }
  }

  function setBusy(busy) {
    el.send.disabled = busy;
    el.stop.disabled = !busy;
    el.answer.setAttribute("aria-busy", String(busy));
  }

  function buildRequest() {
    const content = state.images.map((image) =>
      image.kind === "video"
        ? { type: "video_url", video_url: { url: image.dataUrl } }
        : { type: "image_url", image_url: { url: image.dataUrl } },
    );
    const prompt = el.prompt.value.trim();
    if (prompt) content.push({ type: "text", text: prompt });
    const body = {
      model: el.model.value.trim(),
      messages: [{ role: "user", content }],
      stream: true,
      stream_options: { include_usage: true },
    };
    const maxTokens = Number.parseInt(el.maxTokens.value, 10);
    if (Number.isFinite(maxTokens) && maxTokens > 0) body.max_tokens = maxTokens;
    const temperature = Number.parseFloat(el.temperature.value);
    if (Number.isFinite(temperature)) body.temperature = temperature;
    return body;
  }

  function problemWithForm() {
    if (!state.images.length && !el.prompt.value.trim()) {
      return [el.prompt, "Add an image or a video, or write a prompt."];
    }
    if (!el.model.value.trim()) return [el.model, "Enter the model name."];
    return null;
  }

  async function send(event) {
    event.preventDefault();
    if (state.controller) return;
    const problem = problemWithForm();
    if (problem) {
      showError(problem[1]);
      problem[0].focus();
      return;
    }
    const images = state.images.slice();
    const body = buildRequest();
    resetAnswer();
    setBusy(true);
    el.answer.dataset.state = "streaming";
    const controller = new AbortController();
    state.controller = controller;
    const started = performance.now();
    let firstToken = null;
    let outcome = "error";
    try {
      const response = await fetch(await routeUrl("chat_completions"), {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      showImageSizes(
        response.headers.get(NORMALIZED_HEADER),
        images,
        response.headers.get(VIDEO_HEADER),
      );
      if (!response.ok) {
        showError(await serverMessage(response));
        return;
      }
      let failed = false;
      await readEvents(response, (chunk) => {
        if (chunk.error) {
          failed = true;
          showError(chunk.error.message || "The server stopped the answer.");
          return;
        }
        const delta = chunk.choices && chunk.choices[0] ? chunk.choices[0].delta || {} : {};
        const text = typeof delta.content === "string" ? delta.content : "";
        const thought = typeof delta.reasoning === "string" ? delta.reasoning : "";
        if ((text || thought) && firstToken === null) {
          firstToken = performance.now();
          el.ttft.textContent = formatMs(firstToken - started);
        }
        if (thought) {
          el.reasoningBox.hidden = false;
          el.reasoning.append(thought);
        }
        if (text) el.answer.append(text);
        if (chunk.usage) {
          el.promptTokens.textContent = String(chunk.usage.prompt_tokens);
          el.completionTokens.textContent = String(chunk.usage.completion_tokens);
        }
      });
      outcome = failed ? "error" : "done";
    } catch (error) {
      if (error.name === "AbortError") {
        outcome = "stopped";
      } else {
        showError(`Could not reach the server (${error.message}).`);
      }
    } finally {
      el.totalTime.textContent = formatMs(performance.now() - started);
      state.controller = null;
      setBusy(false);
      el.answer.dataset.state = outcome;
    }
  }

  // ---- wiring -----------------------------------------------------------------------

  function wire() {
    el.apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
    el.apiKey.addEventListener("input", () => {
      const key = el.apiKey.value.trim();
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      else sessionStorage.removeItem(KEY_STORAGE);
    });
    el.apiKey.addEventListener("change", loadModels);

    el.imageInput.addEventListener("change", async () => {
      await addFiles(Array.from(el.imageInput.files));
      el.imageInput.value = "";
    });
    el.dropZone.addEventListener("dragover", (event) => {
      event.preventDefault();
      el.dropZone.classList.add("dragging");
    });
    el.dropZone.addEventListener("dragleave", () => el.dropZone.classList.remove("dragging"));
    el.dropZone.addEventListener("drop", (event) => {
      event.preventDefault();
      el.dropZone.classList.remove("dragging");
      addFiles(Array.from(event.dataTransfer.files));
    });

    el.style.addEventListener("change", applyTemplate);
    el.lang.addEventListener("change", applyTemplate);
    // Typing over a template makes it the user's own prompt, kept as images come and go.
    el.prompt.addEventListener("input", () => {
      el.style.value = "";
    });
    el.prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) el.form.requestSubmit();
    });

    el.form.addEventListener("submit", send);
    el.stop.addEventListener("click", () => state.controller && state.controller.abort());

    loadTemplates();
    loadModels();
  }

  wire();
})();
