// The admin page: log in, then one of the pages below, chosen by the URL's #hash.
// `?poll_ms=` sets the live pages' polling interval (2000 by default; tests make it small).

import { Session } from "./api.js";
import { errorBox, h } from "./dom.js";
import * as crashes from "./admin/crashes.js";
import * as keys from "./admin/keys.js";
import * as missing from "./admin/missing.js";
import * as models from "./admin/models.js";
import * as overview from "./admin/overview.js";
import * as queue from "./admin/queue.js";
import * as tokens from "./admin/tokens.js";
import * as usage from "./admin/usage.js";
import * as users from "./admin/users.js";
import * as whitelist from "./admin/whitelist.js";

const PAGES = [
  ["overview", "Overview", overview], ["queue", "Queue", queue], ["models", "Managed models", models],
  ["keys", "API keys", keys], ["whitelist", "IP whitelist", whitelist], ["tokens", "Registration tokens", tokens],
  ["users", "Users", users], ["usage", "Usage", usage], ["crashes", "Crash log", crashes],
  ["missing", "Missing models", missing],
];

const params = new URLSearchParams(location.search);
const pollMs = Math.max(100, Number(params.get("poll_ms")) || 2000);
const root = document.getElementById("app");
const session = new Session();
let current = null; // {stop()} of the page shown

session.onExpired = (error) => showLogin(error);

function showLogin(error) {
  stopPage();
  window.onhashchange = null;
  const username = h("input", { name: "username", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const problem = h("div", { "aria-live": "polite" }, error ? errorBox(error) : null);
  const button = h("button", { class: "primary", type: "submit" }, "Log in");
  const formEl = h("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      button.disabled = true;
      problem.replaceChildren();
      try {
        const me = await session.login(username.value, password.value);
        if (me.is_admin) showApp();
        else showAdminOnly();
      } catch (err) {
        problem.replaceChildren(errorBox(err));
      } finally {
        button.disabled = false;
      }
    },
  }, h("label", {}, "Username", username), h("label", {}, "Password", password), button);
  root.replaceChildren(h("div", { class: "login" }, h("h1", {}, "seadragon_gw admin"), formEl, problem));
  username.focus();
}

function header() {
  return h("header", { class: "top" }, h("h1", {}, "seadragon_gw admin"),
    h("span", { class: "who" }, `logged in as ${session.me.name}`),
    h("button", { type: "button", onclick: logout }, "Log out"));
}

async function logout() {
  await session.logout();
  showLogin();
}

function showAdminOnly() {
  stopPage();
  root.replaceChildren(header(), h("main", {}, h("section", { class: "panel admin-only" },
    h("h2", {}, "Admin only"),
    h("p", {}, `You are logged in as ${session.me.name}, who is not an administrator. `,
      "This page is for the gateway's administrators; the web chat is at ", h("a", { href: "/chat" }, "/chat"), "."))));
}

function showApp() {
  const nav = h("nav", { class: "pages" }, PAGES.map(([id, title]) => h("a", { href: `#${id}`, "data-page": id }, title)));
  const main = h("main", {});
  root.replaceChildren(header(), nav, main);
  const render = () => {
    const id = location.hash.slice(1) || "overview";
    const [, title, page] = PAGES.find(([pid]) => pid === id) || PAGES[0];
    for (const link of nav.querySelectorAll("a")) link.classList.toggle("current", link.dataset.page === id);
    stopPage();
    document.title = `${title} · seadragon_gw admin`;
    const shown = page.mount({ session, pollMs });
    main.replaceChildren(shown.element);
    current = shown;
  };
  window.onhashchange = render;
  render();
}

function stopPage() {
  if (current && current.stop) current.stop();
  current = null;
}

showLogin();
