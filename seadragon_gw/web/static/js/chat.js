// The web chat: log in (or register with a registration token), pick a model, chat with a
// streamed answer (/api/chat, NDJSON), stop it (the request is aborted, which cancels it
// upstream), and see the queue position while the request waits. The conversation lives
// in this page only. `?poll_ms=` sets how often the queue position is read (1000).

import { errorOf, Session } from "./api.js";
import { errorBox, h } from "./dom.js";
import { ndjsonLines } from "./ndjson.js";

const params = new URLSearchParams(location.search);
const pollMs = Math.max(100, Number(params.get("poll_ms")) || 1000);
const root = document.getElementById("app");
const session = new Session();
session.onExpired = (error) => showLogin(error);

function showLogin(error) {
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const token = h("input", { name: "registration_token", autocomplete: "off", placeholder: "only to register" });
  const problem = h("div", { "aria-live": "polite" }, error ? errorBox(error) : null);
  const busy = (fn) => async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    try {
      await fn();
      showChat();
    } catch (err) {
      problem.replaceChildren(errorBox(err));
    }
  };
  const login = () => session.login(username.value, password.value);
  const register = async () => {
    await session.register(username.value, password.value, token.value.trim());
    await login();
  };
  const formEl = h("form", { onsubmit: busy(login) },
    h("label", {}, "Username", username), h("label", {}, "Password", password),
    h("button", { class: "primary", type: "submit" }, "Log in"),
    h("label", {}, "Registration token (new account)", token),
    h("button", { type: "button", name: "register", onclick: busy(register) }, "Register and log in"));
  root.replaceChildren(h("div", { class: "login" }, h("h1", {}, "seadragon_gw chat"), formEl, problem));
  username.focus();
}

function showChat() {
  const messages = []; // {role, content}: the conversation, in this page only
  const models = h("select", { name: "model", "aria-label": "model" });
  const log = h("div", { class: "log", "aria-live": "polite" });
  const status = h("div", { class: "status-line", "data-status": "" });
  const input = h("textarea", { name: "message", placeholder: "Message (Enter sends, Shift+Enter for a new line)" });
  const send = h("button", { class: "primary", type: "submit" }, "Send");
  const stop = h("button", { type: "button", name: "stop", disabled: true }, "Stop");
  let controller = null;

  const logout = async () => {
    if (controller) controller.abort();
    await session.logout();
    showLogin();
  };
  const clear = () => {
    messages.length = 0;
    log.replaceChildren();
  };
  const toolbar = h("div", { class: "toolbar" }, h("strong", {}, "seadragon_gw chat"), models,
    h("button", { type: "button", onclick: clear }, "New conversation"),
    h("span", { class: "muted" }, `${session.me.name}`), h("button", { type: "button", onclick: logout }, "Log out"));

  const bubble = (role, text) => {
    const body = h("span", { class: "content" }, text);
    const el = h("div", { class: `msg ${role}`, "data-role": role }, body);
    log.append(el);
    log.scrollTop = log.scrollHeight;
    return { el, body };
  };

  const ask = async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || controller || !models.value) return;
    input.value = "";
    messages.push({ role: "user", content: text });
    bubble("user", text);
    const answer = bubble("assistant", "");
    answer.el.classList.add("streaming");
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    const content = await stream(models.value, messages, answer, status, controller.signal);
    messages.push({ role: "assistant", content });
    answer.el.classList.remove("streaming");
    controller = null;
    send.disabled = false;
    stop.disabled = true;
    input.focus();
  };
  stop.addEventListener("click", () => controller && controller.abort());
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) ask(event);
  });

  const compose = h("form", { class: "compose", onsubmit: ask }, input, send, stop);
  root.replaceChildren(h("div", { class: "chat" }, toolbar, log, status, compose));
  loadModels(models, status);
  input.focus();
}

async function loadModels(select, status) {
  try {
    const answer = await session.get("/api/tags");
    const names = (answer.models || []).map((m) => m.name || m.model);
    select.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
    if (!names.length) status.textContent = "No models are served right now.";
  } catch (error) {
    status.replaceChildren(errorBox(error));
  }
}

/** One streamed answer into `answer`; returns the text received (also when stopped). */
async function stream(model, messages, answer, status, signal) {
  let text = "";
  let watcher = null;
  status.textContent = "Sending…";
  try {
    const response = await session.fetch("/api/chat", {
      method: "POST", signal, headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model, messages, stream: true }),
    });
    if (!response.ok) throw await errorOf(response);
    const position = response.headers.get("x-queue-position");
    if (position !== null) {
      status.textContent = `Waiting in the queue: position ${position}`;
      watcher = watchPosition(response.headers.get("x-request-id"), status);
    } else {
      status.textContent = "Answering…";
    }
    for await (const line of ndjsonLines(response)) {
      if (watcher) {
        watcher();
        watcher = null;
        status.textContent = "Answering…";
      }
      if (line.error) throw new Error(line.error);
      const piece = line.message?.content ?? line.response ?? "";
      text += piece;
      answer.body.textContent = text;
      if (line.done) answer.el.append(h("span", { class: "meta" }, doneMeta(line)));
    }
    status.textContent = "";
  } catch (error) {
    if (error.name === "AbortError") {
      answer.el.append(h("span", { class: "meta", "data-stopped": "" }, "stopped"));
      status.textContent = "Stopped.";
    } else {
      answer.el.append(errorBox(error));
      status.textContent = "";
    }
  } finally {
    if (watcher) watcher();
  }
  return text;
}

function doneMeta(line) {
  const parts = [];
  if (line.eval_count) parts.push(`${line.eval_count} tokens`);
  if (line.total_duration) parts.push(`${(line.total_duration / 1e9).toFixed(2)} s`);
  if (line.done_reason) parts.push(line.done_reason);
  return parts.join(" · ");
}

/** Reads this request's place in the queue until stopped (the first answer line). */
function watchPosition(requestId, status) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      const answer = await session.get("/api/queue/status");
      const mine = (answer.waiting || []).find((w) => w.request_id === requestId);
      if (!stopped && mine) status.textContent = `Waiting in the queue: position ${mine.position}`;
    } catch {
      // the position is a courtesy; the stream itself says what went wrong
    }
    if (!stopped) timer = setTimeout(tick, pollMs);
  };
  timer = setTimeout(tick, pollMs);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

showLogin();
