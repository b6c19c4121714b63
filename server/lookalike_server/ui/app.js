// The page's entry point: signing in, the list of collections, creating one, and the router
// (#/ the collections, #/c/<name>/<tab> one collection).

import { ApiError, api, path, session } from "./api.js";
import { CollectionView } from "./collection.js";
import { describeKinds, errorSlot, fill, formatBytes, formatCount, h } from "./dom.js";

const view = document.getElementById("view");
const crumbs = document.getElementById("crumbs");
const who = document.getElementById("who");

/** What the signed-in token may do, and the server's collection types (loaded once). */
const state = { admin: false, types: null };
/** The collection on screen, kept while only its tab changes. */
let current = null;

function leave() {
  current?.destroy();
  current = null;
}

function setCrumbs(...items) {
  fill(crumbs, items.map((item, i) => [i ? h("span", { class: "sep", "aria-hidden": "true", text: "/" }) : null, item]));
}

function setWho() {
  if (!session.token) {
    fill(who);
    return;
  }
  fill(
    who,
    h("span", { class: "badge", title: state.admin ? "Signed in with the admin token" : "Signed in with a collection token" },
      state.admin ? "admin" : "collection token"),
    h("button", { type: "button", class: "link", id: "sign-out", onclick: signOut }, "Sign out"),
  );
}

function signOut() {
  session.signOut();
  leave();
  window.location.hash = "#/";
  route();
}

/** Whether a token is the admin's: only the admin may list tokens. */
async function isAdmin(token) {
  try {
    await api("GET", path("tokens"), { token });
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) return false;
    throw error;
  }
}

// -- sign in -----------------------------------------------------------------------------------

function showSignIn(reason) {
  leave();
  setCrumbs();
  setWho();
  document.title = "Sign in · Lookalike";
  const error = errorSlot("sign-in-error");
  const input = h("input", {
    id: "token", name: "token", type: "password", autocomplete: "current-password", required: true,
    spellcheck: "false", placeholder: "lk_admin_… or a collection token", "aria-describedby": "sign-in-error",
  });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "stack", id: "sign-in" },
    h("label", { for: "token" }, "Token"),
    input,
    error.node,
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.clear();
    const token = input.value.trim();
    button.disabled = true;
    try {
      await api("GET", path("collections"), { token });
      state.admin = await isAdmin(token);
      session.signIn(token);
      route();
    } catch (failure) {
      error.show(failure.status === 401 ? { code: failure.code, message: "This token is not valid here (unknown or revoked)." } : failure);
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  fill(view,
    h("section", { class: "panel narrow" },
      h("h1", {}, "Sign in"),
      h("p", { class: "muted" },
        "Lookalike finds the images in a collection that look like a given one. ",
        "Sign in with the server's admin token, or with a token for one collection."),
      reason ? h("p", { class: "error", role: "alert" }, reason) : null,
      form,
      h("p", { class: "hint" },
        "The admin token is printed where the server starts: it is in the file ",
        h("code", {}, "admin-token"), " of the server's data folder, or in ",
        h("code", {}, "LOOKALIKE_ADMIN_TOKEN"), ". The token stays in this browser tab only."),
    ),
  );
  input.focus();
}

// -- collections -------------------------------------------------------------------------------

async function loadTypes() {
  if (!state.types) state.types = (await api("GET", path("types"))).types;
  return state.types;
}

function collectionCard(info) {
  return h("a", { class: "collection-card", href: `#/c/${encodeURIComponent(info.name)}`, dataset: { name: info.name } },
    h("div", { class: "card-head" },
      h("h2", {}, info.name),
      h("span", { class: "badge type" }, info.type),
    ),
    h("p", { class: "count" }, h("strong", {}, formatCount(info.count)), info.count === 1 ? " record" : " records"),
    h("dl", { class: "facts" },
      h("dt", {}, "Search by"), h("dd", {}, describeKinds(info.query_kinds)),
      info.fields_to_index.length ? [h("dt", {}, "Indexed"), h("dd", {}, info.fields_to_index.join(", "))] : null,
      info.product_id_field ? [h("dt", {}, "Product"), h("dd", {}, info.product_id_field)] : null,
      h("dt", {}, "Memory"), h("dd", {}, formatBytes(info.memory_bytes)),
    ),
  );
}

async function showCollections() {
  leave();
  setCrumbs(h("span", { "aria-current": "page" }, "Collections"));
  setWho();
  document.title = "Collections · Lookalike";
  const list = h("div", { class: "collection-grid", id: "collections", "aria-busy": "true" }, h("p", { class: "muted" }, "Loading…"));
  const listError = errorSlot("collections-error");
  const create = state.admin ? createForm() : null;
  const newButton = state.admin
    ? h("button", { type: "button", class: "primary", id: "new-collection", onclick: () => create.open() }, "New collection")
    : null;
  fill(view,
    h("section", { class: "page" },
      h("div", { class: "page-head" }, h("h1", {}, "Collections"), newButton),
      listError.node,
      list,
      create?.node,
    ),
  );
  try {
    const answer = await api("GET", path("collections"));
    const cards = answer.collections.map(collectionCard);
    const broken = answer.unavailable.map((item) =>
      h("div", { class: "collection-card unavailable" },
        h("div", { class: "card-head" }, h("h2", {}, item.name), h("span", { class: "badge warn" }, "unavailable")),
        h("p", { class: "muted" }, item.message)));
    if (!cards.length && !broken.length) {
      fill(list, h("div", { class: "empty" },
        h("p", {}, "No collections yet."),
        state.admin ? h("p", { class: "muted" }, "Create one: pick a type, then add records with image URLs.") : null));
      create?.open();
    } else {
      fill(list, cards, broken);
    }
  } catch (error) {
    fill(list);
    listError.show(error);
  } finally {
    list.removeAttribute("aria-busy");
  }
}

/** Default values of a type's config (its JSON schema), as a JSON example. */
function configExample(schema) {
  let node = schema ?? {};
  const ref = node.$ref?.split("/").pop();
  if (ref && node.$defs?.[ref]) node = node.$defs[ref];
  const example = {};
  for (const [key, property] of Object.entries(node.properties ?? {})) {
    if ("default" in property) example[key] = property.default;
  }
  return Object.keys(example).length ? JSON.stringify(example) : "";
}

function field(label, control, hint, id) {
  return h("div", { class: "field" },
    h("label", { for: id ?? control.id }, label),
    control,
    hint ? h("p", { class: "hint" }, hint) : null,
  );
}

function splitList(text) {
  return text.split(",").map((part) => part.trim()).filter(Boolean);
}

function createForm() {
  const error = errorSlot("create-error");
  const nameError = errorSlot("create-name-error");
  const name = h("input", { id: "new-name", name: "name", required: true, maxlength: 128, placeholder: "e.g. shoes", autocomplete: "off", "aria-describedby": "create-name-error" });
  const type = h("select", { id: "new-type", name: "type" });
  const typeHelp = h("p", { class: "hint", id: "new-type-help" });
  const fields = h("input", { id: "new-fields", name: "fields_to_index", placeholder: "category, brand, price", autocomplete: "off" });
  const product = h("input", { id: "new-product", name: "product_id_field", placeholder: "product_id", autocomplete: "off" });
  const storeImages = h("input", { id: "new-store-images", type: "checkbox", name: "store_images" });
  const ndim = h("input", { id: "new-ndim", type: "number", min: 1, max: 65536, placeholder: "512" });
  const metric = h("select", { id: "new-metric" }, ["cos", "ip", "l2sq", "hamming"].map((m) => h("option", { value: m }, m)));
  const vectorFields = h("div", { class: "row", hidden: true }, field("Dimensions", ndim), field("Metric", metric));
  const config = h("textarea", { id: "new-config", rows: 2, spellcheck: "false", class: "mono" });
  const submit = h("button", { type: "submit", class: "primary" }, "Create collection");
  const cancel = h("button", { type: "button", onclick: () => close() }, "Cancel");
  let types = [];

  function describeType() {
    const chosen = types.find((t) => t.name === type.value);
    const description = chosen?.description.replace(/\.?\s*$/, ".") ?? "";
    typeHelp.textContent = chosen ? `${description} Search by ${describeKinds(chosen.query_kinds)}.` : "";
    vectorFields.hidden = type.value !== "vectors";
    ndim.required = type.value === "vectors";
    config.placeholder = configExample(chosen?.config) || "{}";
  }
  type.addEventListener("change", describeType);

  const form = h("form", { class: "panel create", id: "create-collection", hidden: true },
    h("h2", {}, "New collection"),
    h("div", { class: "row" },
      h("div", { class: "field" }, h("label", { for: "new-name" }, "Name"), name, nameError.node),
      h("div", { class: "field" }, h("label", { for: "new-type" }, "Type"), type, typeHelp),
    ),
    vectorFields,
    h("div", { class: "row" },
      field("Fields to index", fields, "Metadata fields that filters use most, separated by commas (others can be filtered too, more slowly)."),
      field("Product id field", product, "Records with the same value here are one product: search can group them."),
    ),
    h("label", { class: "check" }, storeImages, " Keep the original images on the server"),
    h("details", { class: "advanced" },
      h("summary", {}, "Type settings (optional)"),
      field("Settings as JSON", config, "Leave empty for the type's defaults, shown greyed."),
    ),
    error.node,
    h("div", { class: "actions" }, submit, cancel),
  );

  function close() {
    form.hidden = true;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.clear();
    nameError.clear();
    const body = { name: name.value.trim(), type: type.value, fields_to_index: splitList(fields.value), store_images: storeImages.checked };
    if (product.value.trim()) body.product_id_field = product.value.trim();
    if (type.value === "vectors") {
      body.ndim = Number(ndim.value);
      body.metric = metric.value;
    }
    if (config.value.trim()) {
      try {
        body.config = JSON.parse(config.value);
      } catch (failure) {
        error.show({ code: "invalid_json", message: `The type settings are not valid JSON: ${failure.message}` });
        return;
      }
    }
    submit.disabled = true;
    try {
      const created = await api("POST", path("collections"), { json: body });
      window.location.hash = `#/c/${encodeURIComponent(created.name)}/upload`;
    } catch (failure) {
      (failure.code === "collection_exists" ? nameError : error).show(failure);
    } finally {
      submit.disabled = false;
    }
  });

  return {
    node: form,
    async open() {
      form.hidden = false;
      name.focus();
      if (types.length) return;
      try {
        types = await loadTypes();
        const preferred = types.some((t) => t.name === "generic") ? "generic" : types[0]?.name;
        fill(type, types.map((t) => h("option", { value: t.name, selected: t.name === preferred }, t.name)));
        describeType();
      } catch (failure) {
        error.show(failure);
      }
    },
  };
}

// -- one collection ----------------------------------------------------------------------------

async function showCollection(name, tab) {
  if (current?.name === name) {
    current.showTab(tab);
    return;
  }
  leave();
  setWho();
  setCrumbs(h("a", { href: "#/" }, "Collections"), h("span", { "aria-current": "page" }, name));
  document.title = `${name} · Lookalike`;
  current = new CollectionView(view, name, { admin: state.admin });
  await current.open(tab);
}

// -- router ------------------------------------------------------------------------------------

async function route() {
  if (!session.token) {
    showSignIn();
    return;
  }
  const match = /^#\/c\/([^/]+)(?:\/([a-z-]+))?$/.exec(window.location.hash);
  if (match) await showCollection(decodeURIComponent(match[1]), match[2]);
  else await showCollections();
}

window.addEventListener("hashchange", () => route());
window.addEventListener("lookalike:unauthorized", (event) => {
  session.signOut();
  showSignIn(`Signed out: ${event.detail}`);
});

async function start() {
  if (session.token) {
    try {
      state.admin = await isAdmin(session.token);
    } catch (error) {
      if (error.status === 401) return; // the unauthorized event has signed out, saying why
    }
  }
  await route();
}

start();
