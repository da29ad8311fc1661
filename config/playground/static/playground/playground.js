// Engram playground: a small client of Engram's public API, no framework, no build step.
// The workspace key lives in sessionStorage only and travels only in the Authorization header
// of same-origin fetches (the page's Content-Security-Policy allows no other destination).
"use strict";

(() => {
  const KEY_ITEM = "engram.playground.key";
  // The tab's chat (conversation id, user id, model): a reload or Back then Forward came back
  // to a new conversation of "playground-user" on the default model, the user's own gone.
  const CHAT_ITEM = "engram.playground.chat";
  const NO_MEMORY = "No memory for this turn (no user id).";
  const FAILED = "No answer: the request failed. Listed below: the preview made before it.";
  const STOPPED = "Stopped before Engram's figures came. Listed below: the preview made before it.";
  const POLL_MS = 500;
  const PAGE = 100; // the API's largest page
  const $ = (id) => document.getElementById(id);

  const chat = {
    conversationId: "",
    messages: [], // the whole conversation, resent on every turn
    busy: false,
    stop: null, // the AbortController of the answer being streamed: "Stop" ends it
    pause: null, // { approvalId, calls } while a run waits for a decision: kept across a reload
  };

  // ---- helpers ------------------------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function newConversationId() {
    // getRandomValues works on plain http too (randomUUID needs a secure context).
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    return "playground-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function key() {
    return sessionStorage.getItem(KEY_ITEM) || "";
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  // A control's name holds what it acts on, at most 80 characters: a screen reader read a
  // 2,000-character memory out in full for each of its four controls.
  function named(text) {
    const chars = Array.from(text); // by code point: an emoji is not cut in half
    return chars.length > 80 ? chars.slice(0, 79).join("") + "…" : text;
  }

  function say(id, text, isError = false) {
    const node = $(id);
    node.textContent = text;
    node.classList.toggle("error", isError);
  }

  function when(seconds) {
    return seconds ? new Date(seconds * 1000).toLocaleString() : "";
  }

  function userId() {
    return $("user-id").value.trim();
  }

  function requestInit(method, body, headers) {
    const init = {
      method,
      headers: { Authorization: "Bearer " + key(), ...headers },
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return init;
  }

  async function failure(response) {
    const text = await response.text();
    let message = text || response.statusText;
    try {
      message = JSON.parse(text).error.message || message;
    } catch (_) {
      // Not the error envelope. A page (a proxy's "502 Bad Gateway", a server's error page) was
      // shown as its markup: its title, else its words, are said instead.
      if (/^\s*</.test(text)) {
        const doc = new DOMParser().parseFromString(text, "text/html"); // parsed, never run
        const words = (doc.title || doc.body?.textContent || "").replace(/\s+/g, " ").trim();
        message = words.slice(0, 200) || response.statusText || "an error page";
      }
    }
    // A 429 or 503 says when to come back (Retry-After, in seconds): said, not left to guess.
    const wait = Number(response.headers.get("retry-after"));
    const later = wait > 0 ? ` Try again in ${Math.ceil(wait)} s.` : "";
    return new ApiFailure(response.status, `${response.status}: ${message}${later}`);
  }

  // fetch() with its failures said as the page's: "Failed to fetch" (Engram down, the network
  // gone) and the browser's refusal of a header it cannot send (a user id in Arabic or with
  // an emoji: "String contains non ISO-8859-1 code point") read as they came.
  async function reach(path, init) {
    const user = init.headers["x-user-id"];
    if (user !== undefined && !/^[\x20-\x7e]*$/.test(user)) {
      throw new ApiFailure(0, "The user id goes in the x-user-id header, which takes ASCII only: use another id.");
    }
    try {
      return await fetch(path, init);
    } catch (error) {
      throw new ApiFailure(0, `Engram could not be reached (${error.message}): check that it runs, then try again.`);
    }
  }

  async function api(path, { method = "GET", body, headers = {} } = {}) {
    if (!key()) throw new ApiFailure(0, "Paste a workspace key first.");
    const response = await reach(path, requestInit(method, body, headers));
    if (!response.ok) throw await failure(response);
    return response.json();
  }

  // One page of a list of the API, the one after `after` (the first without it): the one place
  // that knows the list's cursor, for the lists shown a page at a time and the walks below.
  function listPage(path, after) {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (after) query.set("after", after);
    return api(path + (path.includes("?") ? "&" : "?") + query);
  }

  // A list on screen a page at a time (the memories, a collection's documents): "Show more"
  // adds the next page after the last one shown; the 101st of 1,000 could be found by a
  // search only, or not at all. `list` counts the lists loaded: a page asked for before the
  // list was loaded again (another user id, another collection) is not added to the new one.
  function pager(listId, moreId) {
    return { listId, moreId, after: "", list: 0 };
  }

  // The panel keeps its height until the list's first page is drawn (settle): emptied at once,
  // on the user id field's change when it lost the focus to a click below the list, it moved
  // "Create" or "Upload" up from under the pointer between the press and the release, and the
  // click was lost.
  function resetPager(pages) {
    pages.list += 1;
    const panel = $(pages.listId).closest(".panel");
    panel.style.minHeight = `${panel.offsetHeight}px`;
    $(pages.listId).replaceChildren();
    $(pages.moreId).hidden = true;
  }

  function settle(pages) {
    $(pages.listId).closest(".panel").style.minHeight = "";
  }

  // The next page of `pages` (the first after resetPager) from `path`, each entry drawn by
  // `item`; null when the list was loaded again meanwhile or `current()` says it is not the
  // one asked for any more. The focus goes where the new entries begin when `more`.
  async function showPage(pages, { path, item, more = false, current = () => true }) {
    const asked = pages.list;
    let answer;
    try {
      answer = await listPage(path, more ? pages.after : "");
    } finally {
      if (asked === pages.list) settle(pages); // else the list asked for since settles it
    }
    const { data, has_more, last_id } = answer;
    if (!current() || asked !== pages.list) return null;
    const items = data.map(item);
    $(pages.listId).append(...items);
    pages.after = last_id || pages.after;
    $(pages.moreId).hidden = !has_more;
    if (more && items.length) (items[0].querySelector("button") || focusable(items[0])).focus();
    return { data, hasMore: has_more };
  }

  function focusable(node) {
    node.tabIndex = -1;
    return node;
  }

  function chatHeaders() {
    const headers = { "x-conversation-id": chat.conversationId };
    if (userId()) headers["x-user-id"] = userId();
    const collections = Array.from($("chat-collections").selectedOptions, (o) => o.value);
    if (collections.length) headers["x-collection-ids"] = JSON.stringify(collections);
    return headers;
  }

  function savedChat() {
    try {
      return JSON.parse(sessionStorage.getItem(CHAT_ITEM) || "{}") || {};
    } catch (_) {
      return {};
    }
  }

  function saveChat() {
    const state = {
      conversationId: chat.conversationId,
      userId: $("user-id").value,
      model: $("model").value,
      pause: chat.pause,
    };
    sessionStorage.setItem(CHAT_ITEM, JSON.stringify(state));
  }

  // ---- the key ------------------------------------------------------------------------------

  function showKeyState() {
    say(
      "key-status",
      key()
        ? "A key is set for this tab (sessionStorage; gone when the tab closes)."
        : "No key yet: paste a workspace key. It stays in this tab only.",
    );
  }

  async function useKey(event) {
    event.preventDefault();
    const input = $("key-input");
    const value = input.value.trim();
    input.value = ""; // the key never stays in the page
    if (!value) return;
    sessionStorage.setItem(KEY_ITEM, value);
    showKeyState();
    await loadEverything();
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY_ITEM);
    showKeyState();
    // What the key showed goes with it: memories, models and collections of that workspace.
    for (const id of ["memory-list", "model", "chat-collections", "upload-collection", "document-list"]) {
      $(id).replaceChildren();
    }
    $("memory-more").hidden = true;
    $("document-more").hidden = true;
    clearTimeout(documentsLookAgain);
    say("memory-status", "");
    // and the chat: its answers and the memories beside them stayed on screen, and a reload
    // brought the conversation back under the next key
    newChat();
  }

  async function loadEverything() {
    if (!key()) return;
    try {
      await Promise.all([loadModels(), loadCollections(), loadMemories()]);
    } catch (error) {
      say("key-status", error.message, true);
    }
  }

  // ---- models -------------------------------------------------------------------------------

  async function loadModels() {
    const select = $("model");
    const previous = select.value || savedChat().model; // the tab's choice before a reload
    // Chat models only: the embedding model (POST /v1/embeddings) answers no chat.
    const data = (await api("/v1/models")).data.filter((m) => m.type !== "embedding");
    select.replaceChildren(
      ...data.map((m) =>
        el("option", {
          value: m.id,
          // /v1/models lists the workspace's agents first (agent:<name>, with agent_id)
          text: m.agent_id ? `${m.id} (agent v${m.version}, ${m.target})` : `${m.id} (${m.owned_by})`,
        }),
      ),
    );
    if (data.some((m) => m.id === previous)) select.value = previous;
    else select.value = defaultModel(data);
  }

  // The model the workspace's routes default to (`default` in /v1/models: its upstream's when
  // one is configured, `local` when none is), not the first entry (an agent, listed first: it
  // may have tools that run or wait for approval, which nobody picked). Without one marked
  // (an older server): the local model, else the first upstream's.
  function defaultModel(data) {
    const plain = data.filter((m) => !m.agent_id);
    const pick =
      plain.find((m) => m.default) ||
      plain.find((m) => m.id === "local") ||
      plain.find((m) => m.owned_by === "openai" || m.owned_by === "anthropic") ||
      plain[0] ||
      data[0];
    return pick ? pick.id : "";
  }

  // ---- chat ---------------------------------------------------------------------------------

  function startChat(conversationId) {
    chat.conversationId = conversationId;
    chat.messages = [];
    chat.pause = null;
    $("transcript").replaceChildren();
    $("conversation-id").textContent = "conversation " + chat.conversationId;
  }

  function newChat() {
    startChat(newConversationId());
    saveChat();
    say("chat-status", "New conversation.");
  }

  // After a reload (or Back, then Forward) the tab's conversation comes back as Engram stored
  // it: its last 100 messages, an answer cut off by the reload marked so, and beside each
  // answer the memories it was given and why (Message.recalled), as they are now.
  async function restoreChat(conversationId, pause) {
    let data;
    try {
      const path = `/v1/conversations/${encodeURIComponent(conversationId)}/messages?order=desc&limit=100`;
      ({ data } = await api(path));
    } catch (error) {
      if (error.status !== 404) say("chat-status", error.message, true); // 404: nothing said yet
      return;
    }
    if (chat.conversationId !== conversationId || chat.messages.length) return; // moved on meanwhile
    const said = data.reverse().filter((m) => ["user", "assistant"].includes(m.role) && textOf(m.content));
    const recalled = said.flatMap((m) => (m.recalled || []).filter((r) => r.type === "memory"));
    const pastIds = said.flatMap((m) => (m.recalled || []).filter((r) => r.type === "message").map((r) => r.id));
    const [texts, pastTexts] = await Promise.all([memoryTexts(recalled.map((r) => r.id)), messageTexts(pastIds)]);
    if (chat.conversationId !== conversationId || chat.messages.length) return;
    for (const message of said) {
      const text = textOf(message.content);
      chat.messages.push({ role: message.role, content: text });
      if (message.role === "user") {
        addUserTurn(text);
        continue;
      }
      const turn = addAssistantTurn();
      turn.querySelector(".answer").textContent = text;
      if (message.incomplete) turn.querySelector(".answer").append(el("p", { class: "cut", text: "(cut off)" }));
      const memories = (message.recalled || []).filter((r) => r.type === "memory");
      renderMemoriesUsed(
        turn,
        memories.map((r) => ({ id: r.id, why: r.why, text: texts.get(r.id) ?? r.id, deleted: !texts.has(r.id) })),
      );
      const messages = (message.recalled || []).filter((r) => r.type === "message");
      renderMessagesUsed(
        turn,
        messages.map((r) => ({ id: r.id, why: r.why, text: pastTexts.get(r.id) ?? "", deleted: !pastTexts.has(r.id) })),
      );
      turn.querySelector(".blocks").hidden = true; // not kept: the preview's figures
      turn.querySelector(".blocks").previousElementSibling.hidden = true;
      turn.querySelector(".sources").append(el("li", { class: "none", text: "not kept" }));
      turn.querySelector(".summary").textContent =
        `Restored after a reload: ${memories.length} ${memories.length === 1 ? "memory" : "memories"} given.`;
    }
    if (said.length) {
      say("chat-status", `Restored ${said.length} message${said.length === 1 ? "" : "s"} of this conversation.`);
    }
    // A run that waited for a decision still waits (its approval is Engram's): Approve and
    // Reject again, or it waited unseen until it expired.
    const question = chat.messages[chat.messages.length - 1];
    if (pause && question && question.role === "user") {
      chat.pause = pause;
      const turn = addAssistantTurn();
      turn.querySelector(".summary").textContent = "Restored after a reload: the run waits for your approval.";
      showApproval(turn, pause, chat.messages, question).querySelector("button").focus();
      say("chat-status", "The agent waits for your approval.");
    }
  }

  function textOf(content) {
    if (typeof content === "string") return content;
    if (!Array.isArray(content)) return "";
    return content.filter((part) => part && part.type === "text").map((part) => part.text).join("\n");
  }

  // id -> text of the memories (or past messages) that still exist, one request each, each id
  // once: /v1/memories/{id}, /v1/messages/{id} (an answer keeps only their ids, Message.recalled).
  // A 404: deleted since, left out; another failure: its id, as it is, not known to be gone.
  async function textsById(ids, path, textOfBody) {
    const texts = new Map();
    await Promise.all(
      [...new Set(ids)].map(async (id) => {
        try {
          texts.set(id, textOfBody(await api(`${path}/${encodeURIComponent(id)}`)));
        } catch (error) {
          if (error.status !== 404) texts.set(id, id);
        }
      }),
    );
    return texts;
  }

  const memoryTexts = (ids) => textsById(ids, "/v1/memories", (memory) => memory.text);
  const messageTexts = (ids) => textsById(ids, "/v1/messages", (message) => textOf(message.content));

  function addUserTurn(text) {
    const item = el(
      "li",
      { class: "turn" },
      el("div", { class: "message user" }, el("h3", { class: "who", text: "You" }), el("p", { text, dir: "auto" })),
    );
    $("transcript").append(item);
  }

  function addAssistantTurn() {
    const turn = $("turn-template").content.firstElementChild.cloneNode(true);
    $("transcript").append(turn);
    return turn;
  }

  // The memories a turn was given: the preview's (/v1/context) first, then the answer's own
  // (engram.memories), which is what the model really read.
  // Each with a Delete: a memory that should not have been used goes from where it is seen,
  // not only from the panel's list (its first 100, where it may not be).
  function renderMemoriesUsed(turn, used) {
    const list = turn.querySelector(".memories-used");
    list.replaceChildren(
      ...used.map((item) => {
        const text = (item.line || item.text || "").replace(/^- /, "");
        const row = el(
          "li",
          { "data-memory-id": item.id },
          el("span", { text, dir: "auto" }),
          el("small", { text: item.why || "" }),
        );
        if (item.deleted) {
          markDeleted(row);
        } else if (item.id) {
          const remove = el("button", {
            type: "button",
            class: "danger small",
            "aria-label": "Delete memory used: " + named(text),
            text: "Delete",
            onclick: () => askFirst(remove, text, () => deleteUsedMemory(item.id, text, row)),
          });
          row.append(remove);
        }
        return row;
      }),
    );
    if (!used.length) list.append(el("li", { class: "none", text: "none" }));
  }

  // The user's words from earlier conversations that went to the model, each with why it was
  // found: the summary counted them and nothing showed which.
  function renderMessagesUsed(turn, used) {
    const list = turn.querySelector(".messages-used");
    list.replaceChildren(
      ...used.map((item) => {
        const row = el(
          "li",
          { "data-message-id": item.id },
          el("span", { text: (item.line || item.text || "").replace(/^- /, ""), dir: "auto" }),
          el("small", { text: item.why || "" }),
        );
        if (item.deleted) markDeleted(row);
        return row;
      }),
    );
    if (!used.length) list.append(el("li", { class: "none", text: "none" }));
  }

  function renderPreview(turn, preview) {
    const blocks = preview.blocks || [];
    const items = (name) => blocks.filter((b) => b.name === name).flatMap((b) => b.items || []);
    renderMemoriesUsed(turn, items("memories"));
    renderMessagesUsed(turn, items("retrieved_messages"));
    // The chunks it found too: with the answer failing (an upstream down), "Knowledge sources"
    // stood empty under the memories and messages the same preview listed.
    renderSources(turn, items("knowledge").flatMap((k) => k.sources || []));
    const body = turn.querySelector(".blocks tbody");
    body.replaceChildren(
      ...blocks.map((b) => el("tr", {}, el("th", { scope: "row", text: b.name }), el("td", { text: String(b.tokens) }))),
      el("tr", { class: "total" }, el("th", { scope: "row", text: "total" }), el("td", { text: String(preview.context_tokens) })),
    );
  }

  function renderEngram(turn, engram) {
    const count = (n, one, many) => `${n ?? 0} ${n === 1 ? one : many}`;
    const parts = [
      count(engram.memories_used, "memory used", "memories used"),
      count(engram.messages_retrieved, "past message retrieved", "past messages retrieved"),
      count(engram.history_messages, "earlier turn", "earlier turns"),
      `${engram.context_tokens} context tokens`,
    ];
    // Without a user id the engram object holds only the charge: nothing was remembered.
    turn.querySelector(".summary").textContent =
      engram.context_tokens == null ? NO_MEMORY : parts.join(" · ");
    turn.dataset.engram = "shown";
    if (Array.isArray(engram.memories)) renderMemoriesUsed(turn, engram.memories);
    if (Array.isArray(engram.messages)) renderMessagesUsed(turn, engram.messages);
    renderSources(turn, engram.sources || []);
  }

  function renderSources(turn, sources) {
    turn.querySelector(".sources").replaceChildren(
      ...sources.map((s) =>
        el(
          "li",
          {},
          el("strong", { text: s.title || s.document_id }),
          el("small", { text: ` chunk ${s.chunk_index}, score ${Number(s.score).toFixed(3)}` }),
          el("blockquote", { text: s.snippet || "", dir: "auto" }),
        ),
      ),
    );
    if (!sources.length) turn.querySelector(".sources").append(el("li", { class: "none", text: "none" }));
  }

  // Reads an SSE body: calls onData with each parsed `data:` payload until [DONE].
  async function readEvents(response, onData) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
        let cut;
        while ((cut = buffer.search(/\r?\n\r?\n/)) !== -1) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
          const data = event
            .split(/\r?\n/)
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).replace(/^ /, ""))
            .join("\n");
          if (!data) continue; // a keep-alive comment
          if (data === "[DONE]") return;
          onData(JSON.parse(data));
        }
        // Engram ends every stream, a failed one too, with [DONE]: without it the connection
        // was cut (Engram restarted, a proxy's timeout). It read as a finished turn: an empty
        // or partial answer, and "no user id" under it.
        if (done) throw new ApiFailure(0, "The answer's stream was cut off before its end (the connection closed).");
      }
    } catch (error) {
      reader.cancel().catch(() => {}); // hang up: Engram closes the upstream request too
      throw error;
    }
  }

  // One answer stream, a chat's or a resume's, into `turn`: the text as it comes (added to
  // `state.content`), the calls an agent's tools run with their results, and what a paused
  // run waits for. Returns the pause ({ approvalId, calls }) or null.
  async function relay(turn, response, state) {
    const answer = turn.querySelector(".answer");
    const waiting = new Map(); // tool-call index -> { id, name, arguments }: shown, not run
    let approvalId = "";
    await readEvents(response, (data) => {
      if (data.error) throw new ApiFailure(0, data.error.message || "The stream failed.");
      const engram = data.engram || {};
      if (engram.tool_call) showToolCall(turn, engram.tool_call);
      else if (engram.tool_result) showToolResult(turn, engram.tool_result);
      else if (data.engram && (!turn.dataset.engram || "context_tokens" in engram)) {
        renderEngram(turn, engram); // a resume's last chunk holds no memory figures: kept
      }
      if (engram.approval_id) approvalId = engram.approval_id;
      for (const choice of data.choices || []) {
        if ((choice.index ?? 0) !== 0 || !choice.delta) continue;
        if (choice.delta.content) {
          state.content += choice.delta.content;
          answer.textContent = state.content;
        }
        // Calls marked engram.tool_call run now (shown above); the others wait or go back.
        for (const call of engram.tool_call ? [] : choice.delta.tool_calls || []) {
          const slot = waiting.get(call.index) || { id: "", name: "", arguments: "" };
          const fn = call.function || {};
          slot.id = call.id || slot.id;
          slot.name += fn.name || "";
          slot.arguments += fn.arguments || "";
          waiting.set(call.index, slot);
        }
      }
    });
    return approvalId ? { approvalId, calls: Array.from(waiting.values()) } : null;
  }

  function toolList(turn) {
    let list = turn.querySelector(".tool-calls");
    if (!list) {
      list = el("ul", { class: "tool-calls", "aria-label": "Tools the agent ran" });
      turn.querySelector(".answer").before(list);
    }
    return list;
  }

  function showToolCall(turn, call) {
    toolList(turn).append(
      el(
        "li",
        { "data-tool-call-id": call.id },
        el("code", { text: call.name }),
        el("span", { class: "badge " + call.status, text: call.status }),
      ),
    );
  }

  function showToolResult(turn, result) {
    const list = toolList(turn);
    const row = list.querySelector(`[data-tool-call-id="${CSS.escape(result.tool_call_id)}"]`);
    const item = row || list.appendChild(el("li", {}, el("code", { text: result.name })));
    item.querySelector(".badge")?.remove();
    item.append(el("span", { class: "badge " + result.status, text: result.status }));
  }

  // The calls a paused run waits on, with Approve / Reject: the decision is sent to
  // POST /v1/chat/resume, whose answer streams on into the same turn.
  function showApproval(turn, pause, history, question) {
    const reason = el("input", { "aria-label": "Reason (optional, sent with a rejection)", placeholder: "Reason (optional)" });
    const status = el("p", { class: "status", role: "status" });
    const buttons = [
      el("button", { type: "button", text: "Approve", onclick: () => decide("approve") }),
      el("button", { type: "button", class: "danger", text: "Reject", onclick: () => decide("reject") }),
    ];
    const box = el(
      "div",
      { class: "approval", role: "group", "aria-label": "Tool calls waiting for approval" },
      el("h4", { text: "Waiting for your approval" }),
      el(
        "ul",
        {},
        ...pause.calls.map((c) =>
          el("li", { "data-tool-call-id": c.id }, el("code", { text: c.name }), el("pre", { text: prettyJson(c.arguments) })),
        ),
      ),
      el("div", { class: "row" }, ...buttons, reason),
      status,
    );
    turn.querySelector(".answer").before(box);
    return box;

    async function decide(decision) {
      if (chat.busy) return say("chat-status", "Wait for the answer being streamed.", true);
      chat.busy = true;
      $("chat-send").disabled = true;
      for (const b of buttons) b.disabled = true;
      status.classList.remove("error");
      status.textContent = decision === "approve" ? "Approved: running the tools…" : "Rejected: the model answers…";
      const body = { approval_id: pause.approvalId, decision, stream: true };
      if (decision === "reject" && reason.value.trim()) body.reason = reason.value.trim();
      const headers = userId() ? { "x-user-id": userId() } : {};
      const state = { content: "" };
      let again = null;
      let next = null; // the next approval's box when the run pauses again
      let failed = false;
      turn.setAttribute("aria-busy", "true");
      try {
        const response = await reach("/v1/chat/resume", requestInit("POST", body, headers));
        if (!response.ok) throw await failure(response);
        box.dataset.decision = decision;
        again = await relay(turn, response, state);
        status.textContent = decision === "approve" ? "Approved." : "Rejected.";
        box.querySelector("h4").textContent = decision === "approve" ? "Approved tool calls" : "Rejected tool calls";
        say("chat-status", again ? "The agent waits for your approval." : "");
        reason.disabled = true;
        if (again) next = showApproval(turn, again, history, question); // paused again
        if (chat.messages === history) {
          chat.pause = again;
          saveChat();
        }
      } catch (error) {
        failed = true;
        status.textContent = error.message;
        status.classList.add("error");
        // Not sent: either decision. Sent, its stream failed: the same decision again (Engram
        // goes on from the run's stored state; the other one is refused).
        const chosen = box.dataset.decision;
        buttons[0].disabled = chosen === "reject";
        buttons[1].disabled = chosen === "approve";
        buttons[decision === "approve" ? 0 : 1].focus(); // the same decision again: one key away
      } finally {
        // The answer joins the transcript resent next turn, after its question.
        if (state.content && history[history.length - 1] === question) {
          history.push({ role: "assistant", content: state.content });
        }
        chat.busy = false;
        $("chat-send").disabled = false;
        turn.setAttribute("aria-busy", "false");
        // The pressed button is disabled now, and the focus had fallen to the page's top.
        if (!failed) (next ? next.querySelector("button") : $("chat-input")).focus();
      }
      loadMemories();
    }
  }

  function prettyJson(text) {
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch (_) {
      return text; // arguments that are not JSON are shown as the model wrote them
    }
  }

  async function send(event) {
    event.preventDefault();
    const input = $("chat-input");
    const text = input.value.trim();
    if (!text || chat.busy) return;
    if (!key()) return say("chat-status", "Paste a workspace key first.", true);
    chat.busy = true;
    $("chat-send").disabled = true;
    input.value = "";
    // This turn's conversation: "New chat" while the answer streams starts another, and the
    // late answer must not open it.
    const history = chat.messages;
    const question = { role: "user", content: text };
    history.push(question);
    addUserTurn(text);
    const turn = addAssistantTurn();
    const answer = turn.querySelector(".answer");
    const body = { model: $("model").value, messages: history };
    const headers = chatHeaders();
    const state = { content: "" };
    let pause = null;
    let waiting = null; // the approval's box when the run pauses
    // A long or runaway answer could not be stopped: only a reload or "New chat" (which let
    // it stream on) ended it. Stop hangs up; Engram keeps what came, marked cut off.
    const stop = new AbortController();
    chat.stop = stop;
    $("chat-stop").hidden = false;
    saveChat(); // the model this conversation goes on with after a reload
    // A live region announced each piece as it came: busy until the answer is whole.
    turn.setAttribute("aria-busy", "true");
    try {
      say("chat-status", "Assembling context…");
      // What Engram will put in front of the model: the same request as a dry run. A failed
      // preview is reported beside the answer; the chat itself still goes ahead.
      try {
        renderPreview(turn, await api("/v1/context", { method: "POST", body, headers }));
      } catch (error) {
        turn.querySelector(".memories-used").replaceChildren(
          el("li", { class: "error", text: "Context preview failed: " + error.message }),
        );
      }
      say("chat-status", "Streaming the answer…");
      turn.querySelector(".summary").textContent = "Waiting for the answer…";
      const response = await reach("/v1/chat/completions", {
        ...requestInit("POST", { ...body, stream: true }, headers),
        signal: stop.signal,
      });
      if (!response.ok) throw await failure(response);
      pause = await relay(turn, response, state);
      if (!turn.dataset.engram) {
        turn.querySelector(".summary").textContent = NO_MEMORY; // no engram chunk at all
      }
      if (pause) waiting = showApproval(turn, pause, history, question);
      if (pause && chat.messages === history) {
        chat.pause = pause;
        saveChat();
      }
      say("chat-status", pause ? "The agent waits for your approval." : "");
    } catch (error) {
      if (stop.signal.aborted) {
        answer.append(el("p", { class: "cut", text: "(stopped)" }));
        say("chat-status", "Stopped: the answer so far is kept.");
        if (!turn.dataset.engram) turn.querySelector(".summary").textContent = STOPPED;
      } else {
        say("chat-status", error.message, true);
        answer.append(el("p", { class: "error", text: error.message }));
        // It read "Preparing context…" for good: the turn failed, and what is listed beside
        // it is the preview's, which no answer was given.
        if (!turn.dataset.engram) turn.querySelector(".summary").textContent = FAILED;
      }
    } finally {
      turn.setAttribute("aria-busy", "false");
      if (state.content) history.push({ role: "assistant", content: state.content });
      // Nothing came back: the question is not part of the history. A paused run's question
      // is: its answer comes with the resume.
      else if (!pause) history.pop();
      chat.busy = false;
      chat.stop = null;
      $("chat-stop").hidden = true;
      $("chat-send").disabled = false;
      // A paused run waits on Approve or Reject: the focus goes there, not back to the input.
      (waiting ? waiting.querySelector("button") : input).focus();
    }
    loadMemories(); // the worker may have learnt something already
  }

  // What was said here is remembered too (a past message beside another conversation's answer,
  // the memories extracted from it): the conversation goes with what came from it alone, as
  // DELETE /v1/conversations/{id} does; a new one starts.
  async function deleteConversation() {
    if (chat.busy) return say("chat-status", "Wait for the answer being streamed.", true);
    const conversationId = chat.conversationId;
    try {
      const { counts } = await api(`/v1/conversations/${encodeURIComponent(conversationId)}`, { method: "DELETE" });
      const messages = `${counts.messages} message${counts.messages === 1 ? "" : "s"}`;
      const memories = `${counts.memories} ${counts.memories === 1 ? "memory" : "memories"}`;
      newChat();
      say("chat-status", `Deleted the conversation: ${messages}, and ${memories} taken from it alone.`);
      loadMemories();
    } catch (error) {
      if (error.status !== 404) return say("chat-status", error.message, true);
      newChat(); // nothing stored for it yet
      say("chat-status", "Nothing of this conversation was stored.");
    }
    $("chat-input").focus();
  }

  // ---- memories -----------------------------------------------------------------------------

  // The list's cursor ("Show more" goes on from its last memory) and which list it is: a page
  // asked for before the list was loaded again (the user id's change on leaving the field)
  // would add the old list's next page to the new one.
  const memoryPages = pager("memory-list", "memory-more");

  function memoryItem(memory) {
    const text = el("p", { class: "text", text: memory.text, dir: "auto" });
    const meta = el("small", {
      text: [memory.kind, memory.event_date, "updated " + when(memory.updated_at)].filter(Boolean).join(" · "),
    });
    const history = el(
      "details",
      { class: "history" },
      el("summary", { text: "History", "aria-label": "History of: " + named(memory.text) }),
      el("ol"),
    );
    history.addEventListener("toggle", () => history.open && loadHistory(memory.id, history));
    // Where the memory came from: the messages it was extracted from (the API's `sources`).
    const sources = memory.sources || [];
    const from = sources.length
      ? el(
          "details",
          { class: "sources-of" },
          el("summary", { text: `Sources (${sources.length})`, "aria-label": `Sources (${sources.length}) of: ${named(memory.text)}` }),
          el("ol"),
        )
      : el("small", { text: "No source message: added by hand, or its messages are gone." });
    if (sources.length) from.addEventListener("toggle", () => from.open && loadSources(sources, from));
    // A search hit says why it was found, as a memory beside an answer says why it was used.
    const why = memory.why ? el("small", { class: "why", text: "Found by " + memory.why }) : null;
    const item = el("li", { "data-memory-id": memory.id }, text, meta, why);
    const edit = el("button", {
      type: "button",
      "aria-label": "Edit memory: " + named(memory.text),
      text: "Edit",
      onclick: () => editMemory(memory, item, edit),
    });
    const remove = el("button", {
      type: "button",
      class: "danger",
      "aria-label": "Delete memory: " + named(memory.text),
      text: "Delete",
      onclick: () => askFirst(remove, memory.text, () => deleteMemory(memory)),
    });
    item.append(el("div", { class: "row" }, edit, remove), from, history);
    return item;
  }

  function stillAsked(asked) {
    return asked.user === userId() && asked.key === key();
  }

  // The user's memories, a page of 100 at a time: "Show more" adds the next page (the 101st
  // memory of 1,000 could only be found by a search).
  async function loadMemories(more) {
    if (!key()) return;
    more = more === true;
    // Another user's memories never stay on screen under this one's id (nor under none).
    if (!more) resetPager(memoryPages);
    if (!userId()) {
      settle(memoryPages);
      return say("memory-status", "Set a user id to see its memories.");
    }
    const asked = { user: userId(), key: key() };
    try {
      // A list asked for before the user id or key changed (a turn's refresh, then "Forget
      // key") arrived after the change and filled the cleared list with the old user's.
      const page = await showPage(memoryPages, {
        path: `/v1/memories?user_id=${encodeURIComponent(asked.user)}`,
        item: memoryItem,
        more,
        current: () => stillAsked(asked),
      });
      if (!page) return;
      const shown = $("memory-list").children.length;
      // "1 memories of …" read as a typo; "1+" is a page's first of more, so plural.
      const noun = shown === 1 && !page.hasMore ? "memory" : "memories";
      say("memory-status", `${shown}${page.hasMore ? "+" : ""} ${noun} of ${userId()}.`);
    } catch (error) {
      say("memory-status", error.message, true);
    }
  }

  async function searchMemories(event) {
    event.preventDefault();
    const query = $("memory-query").value.trim();
    if (!query) return loadMemories();
    const asked = { user: userId(), key: key() };
    try {
      const { data } = await api("/v1/memories/search", {
        method: "POST",
        body: { user_id: asked.user, query, limit: 20 },
      });
      if (!stillAsked(asked)) return;
      memoryPages.list += 1; // the list's cursor does not go on from a search
      settle(memoryPages); // a list asked for before no longer does
      $("memory-list").replaceChildren(...data.map(memoryItem));
      $("memory-more").hidden = true;
      say("memory-status", `${data.length} result${data.length === 1 ? "" : "s"} for “${query}”.`);
    } catch (error) {
      say("memory-status", error.message, true);
    }
  }

  // One form per memory; Cancel or Escape closes it and gives the focus back to Edit, Save
  // shows the memory as saved in place (a reload of the list lost the pages past the first
  // and the focus with them).
  function editMemory(memory, item, button) {
    const open = item.querySelector("form.edit");
    if (open) return open.querySelector("textarea").focus();
    const area = el("textarea", { rows: "2", dir: "auto", "aria-label": "New text of the memory" });
    area.value = memory.text;
    const close = () => {
      form.remove();
      button.focus();
    };
    // A refusal is said in the form, by the text it is about: the panel's status line may be
    // a hundred memories up, out of sight.
    const problem = el("p", { class: "status error", role: "alert" });
    const form = el(
      "form",
      { class: "stack edit" },
      area,
      problem,
      el(
        "div",
        { class: "row" },
        el("button", { type: "submit", text: "Save" }),
        el("button", { type: "button", text: "Cancel", onclick: close }),
      ),
    );
    form.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      event.preventDefault();
      close();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const saved = await api(`/v1/memories/${encodeURIComponent(memory.id)}`, {
          method: "PATCH",
          body: { text: area.value },
        });
        const again = memoryItem(saved);
        item.replaceWith(again);
        again.querySelector("button").focus();
        say("memory-status", "Memory saved.");
      } catch (error) {
        problem.textContent = error.message;
        area.setAttribute("aria-invalid", "true");
        area.focus();
      }
    });
    item.append(form);
    area.focus();
  }

  // A deletion is for good, so Delete asks first, in place (as the admin's confirmation page
  // does): only "Yes, delete" deletes; Cancel or Escape puts the Delete button back.
  function askFirst(button, text, action, asked = "Delete this memory for good?") {
    const size = button.classList.contains("small") ? " small" : "";
    const done = () => {
      question.remove();
      button.hidden = false;
    };
    const cancel = () => {
      done();
      button.focus();
    };
    const yes = el("button", {
      type: "button",
      class: "danger" + size,
      "aria-label": "Yes, delete: " + named(text),
      text: "Yes, delete",
      onclick: () => {
        done();
        action();
      },
    });
    const no = el("button", { type: "button", class: size.trim(), text: "Cancel", onclick: cancel });
    const question = el(
      "span",
      { class: "confirm", role: "group", "aria-label": asked },
      el("span", { text: "Delete for good?" }),
      yes,
      no,
    );
    question.addEventListener("keydown", (event) => {
      if (event.key !== "Escape") return;
      event.preventDefault();
      cancel();
    });
    button.hidden = true;
    button.after(question);
    no.focus();
  }

  // A deleted memory is said so everywhere it is shown: beside every answer it was given to
  // (a Delete left there answered 404) and gone from the panel's list.
  function memoryGone(memoryId) {
    const id = CSS.escape(memoryId);
    for (const row of document.querySelectorAll(`.memories-used li[data-memory-id="${id}"]`)) {
      if (!row.classList.contains("deleted")) markDeleted(row);
    }
    const item = $("memory-list").querySelector(`li[data-memory-id="${id}"]`);
    if (!item) return;
    // the focus goes on to the next memory (else the one before, else the search box), not
    // to the page's top
    const next = item.nextElementSibling || item.previousElementSibling;
    const focused = item.contains(document.activeElement) || document.activeElement === document.body;
    item.remove();
    if (focused) (next ? next.querySelector("button") : $("memory-query")).focus();
  }

  function markDeleted(row) {
    row.classList.add("deleted");
    for (const control of row.querySelectorAll("button, .confirm")) control.remove();
    row.append(el("small", { text: "deleted" }));
  }

  // DELETE, with a 404 taken for what it means: the memory is gone already (deleted in another
  // tab, by the admin, with its conversation). It was an error, and the memory stayed listed
  // with its Delete, which answered 404 again.
  async function forget(memoryId, text) {
    let said = "Deleted";
    try {
      await api(`/v1/memories/${encodeURIComponent(memoryId)}`, { method: "DELETE" });
    } catch (error) {
      if (error.status !== 404) throw error;
      said = "Already deleted";
    }
    memoryGone(memoryId);
    say("memory-status", `${said}: ${text}`);
  }

  async function deleteMemory(memory) {
    await forget(memory.id, memory.text).catch((error) => say("memory-status", error.message, true));
  }

  async function deleteUsedMemory(memoryId, text, row) {
    try {
      await forget(memoryId, text);
      row.tabIndex = -1; // its Delete is gone: the focus stays on the row that says so
      row.focus();
    } catch (error) {
      say("memory-status", error.message, true);
    }
  }

  async function loadSources(sources, details) {
    const list = details.querySelector("ol");
    const rows = await Promise.all(
      sources.map(async (source) => {
        const message = await sourceMessage(source).catch(() => null);
        const where = `conversation ${source.conversation_id || "?"}, ${when(source.created_at)}`;
        if (!message) return el("li", {}, el("small", { text: `message ${source.message_id} (${where}): no longer stored` }));
        return el(
          "li",
          { "data-message-id": message.id },
          el("blockquote", { text: textOf(message.content), dir: "auto" }),
          el("small", { text: `${message.role === "user" ? "said by the user" : "said by " + message.role} in ${where}` }),
        );
      }),
    );
    list.replaceChildren(...rows);
  }

  // One message of a conversation by its id: the message just before it (newest first, after
  // it), then the one after that (oldest first); the first message when none is before it.
  async function sourceMessage(source) {
    if (!source.conversation_id) return null;
    const base = `/v1/conversations/${encodeURIComponent(source.conversation_id)}/messages?limit=1`;
    const before = await api(`${base}&order=desc&after=${encodeURIComponent(source.message_id)}`);
    const from = before.data.length ? `&after=${encodeURIComponent(before.data[0].id)}` : "";
    const { data } = await api(`${base}&order=asc${from}`);
    return data.length && data[0].id === source.message_id ? data[0] : null;
  }

  async function loadHistory(memoryId, details) {
    const list = details.querySelector("ol");
    try {
      // every page: the history is a list paged as the others (20 entries unless asked)
      const path = `/v1/memories/${encodeURIComponent(memoryId)}/history`;
      const data = [];
      for (let after = ""; ; ) {
        const page = await listPage(path, after);
        data.push(...page.data);
        if (!page.has_more || !page.last_id) break;
        after = page.last_id;
      }
      list.replaceChildren(
        ...data.map((e) =>
          el(
            "li",
            {},
            el("strong", { text: e.event }),
            el("span", { text: ` ${when(e.created_at)} by ${e.actor}: ` }),
            el("span", { text: e.old_text ? `${e.old_text} → ${e.new_text ?? ""}` : e.new_text ?? "" }),
            // what else an UPDATE changed: a kind, date or metadata edit read as "X → X"
            ...Object.entries(e.changes ?? {})
              .filter(([field]) => field !== "text")
              .map(([field, c]) =>
                el("span", { text: ` (${field}: ${JSON.stringify(c.old)} → ${JSON.stringify(c.new)})` }),
              ),
          ),
        ),
      );
    } catch (error) {
      list.replaceChildren(el("li", { class: "error", text: error.message }));
    }
  }

  // ---- collections --------------------------------------------------------------------------

  async function loadCollections() {
    const { data } = await api("/v1/collections?limit=100");
    const chosen = new Set(Array.from($("chat-collections").selectedOptions, (o) => o.value));
    const upload = $("upload-collection");
    const previous = upload.value;
    const docs = (n) => `${n} ${n === 1 ? "doc" : "docs"}`; // it read "(1 docs)"
    // Two collections of one name read the same ("Docs (0 docs)" twice): a name the list
    // holds more than once says the end of its id too (the random part: ids made in the same
    // millisecond begin alike), and the id in full when hovered.
    const nameCounts = new Map();
    for (const c of data) nameCounts.set(c.name, (nameCounts.get(c.name) || 0) + 1);
    const label = (c) => {
      const apart = nameCounts.get(c.name) > 1 ? `, id …${c.id.slice(-6)}` : "";
      return `${c.name} (${docs(c.document_count ?? 0)}${apart})`;
    };
    const option = (c) => el("option", { value: c.id, text: label(c), title: c.id });
    $("chat-collections").replaceChildren(...data.map(option));
    for (const o of $("chat-collections").options) o.selected = chosen.has(o.value);
    upload.replaceChildren(...data.map(option));
    if (data.some((c) => c.id === previous)) upload.value = previous;
    await loadDocuments();
  }

  function documentItem(doc) {
    const progress = doc.progress && doc.progress.total ? ` (${doc.progress.done}/${doc.progress.total} chunks)` : "";
    return el(
      "li",
      { "data-document-id": doc.id, "data-status": doc.status },
      el("span", { text: doc.title || doc.filename || doc.id, dir: "auto" }),
      " ", // read aloud (and copied) as "office.md ready", not "office.mdready"
      el("span", { class: "badge " + doc.status, text: doc.status + progress }),
      doc.error ? el("small", { class: "error", text: doc.error }) : null,
    );
  }

  let documentsLookAgain = 0;
  const documentPages = pager("document-list", "document-more");

  // A collection's documents, a page of 100 at a time ("Show more documents" adds the next).
  async function loadDocuments(more) {
    more = more === true;
    const collection = $("upload-collection").value;
    if (!more) {
      clearTimeout(documentsLookAgain);
      resetPager(documentPages);
    }
    if (!collection) return settle(documentPages);
    const path = `/v1/collections/${encodeURIComponent(collection)}/documents`;
    const page = await showPage(documentPages, {
      path,
      item: documentItem,
      more,
      current: () => $("upload-collection").value === collection, // another one chosen meanwhile
    });
    if (!page) return;
    // A document still being read that this page did not upload (before a reload, in another
    // tab, through the API) said "processing" for good: every page shown is read again until
    // its documents are done, each shown one redrawn in place. Only the first page was: one
    // shown by "Show more" stayed "queued", and was not looked at at all once the first was done.
    lookAgain(path, documentPages.list);
  }

  // A document still being read is looked at again until it is done: ready, failed, or gone
  // (deleted: a 404, or missing from its list). A look that fails is tried again after a wait
  // twice the last (at most LOOK_MAX_WAIT_MS), and given up after LOOK_ERRORS in a row, said
  // on the page: a deleted document was looked for every 2 s for as long as the page was open.
  const LOOK_ERRORS = 5;
  const LOOK_MAX_WAIT_MS = 15_000;
  const reading = (doc) => doc.status === "queued" || doc.status === "processing";
  const lookWait = (errors) => Math.min(POLL_MS * 2 ** errors, LOOK_MAX_WAIT_MS);
  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  // Only a refusal that a later look would get again ends it at once: not a 408 or a 429.
  const refusedForGood = (error) => error.status >= 400 && error.status < 500 && ![408, 429].includes(error.status);

  function goneItem(id, title) {
    return documentItem({ id, title, status: "deleted", error: "No longer in the collection (deleted)." });
  }

  function lookAgain(path, list, errors = 0) {
    clearTimeout(documentsLookAgain); // one round at a time, whichever page started it
    const shown = () => Array.from($("document-list").children);
    const stillReading = () => shown().some((row) => reading(row.dataset));
    if (!stillReading()) return;
    documentsLookAgain = setTimeout(async () => {
      // Done meanwhile (the upload's own look redrew it): nothing to ask for.
      if (list !== documentPages.list || !stillReading()) return;
      try {
        // The pages shown, from the first to the one holding the last row shown.
        const last = documentPages.after;
        const seen = new Set();
        let walked = false; // to the last row shown, or the list's end
        let after = "";
        for (let pages = Math.ceil(shown().length / PAGE); pages > 0; pages -= 1) {
          const { data, has_more, last_id } = await listPage(path, after);
          if (list !== documentPages.list) return; // the list was loaded again meanwhile
          const rows = new Map(shown().map((row) => [row.dataset.documentId, row]));
          for (const doc of data) {
            seen.add(doc.id);
            rows.get(doc.id)?.replaceWith(documentItem(doc));
          }
          walked = !has_more || !last_id || data.some((doc) => doc.id === last);
          if (walked) break;
          after = last_id;
        }
        // A row being read that the list no longer holds was deleted: said, not asked for
        // again. Not when the walk stopped short (documents added since pushed rows further).
        for (const row of walked ? shown() : []) {
          if (reading(row.dataset) && !seen.has(row.dataset.documentId)) {
            row.replaceWith(goneItem(row.dataset.documentId, row.firstElementChild.textContent));
          }
        }
        lookAgain(path, list);
      } catch (error) {
        if (list !== documentPages.list) return;
        if (refusedForGood(error) || errors + 1 >= LOOK_ERRORS) {
          say("collection-status", `Stopped looking at the documents being read: ${error.message} Reload to look again.`, true);
          return;
        }
        lookAgain(path, list, errors + 1);
      }
    }, errors ? lookWait(errors) : 4 * POLL_MS);
  }

  async function createCollection(event) {
    event.preventDefault();
    const name = $("collection-name").value.trim();
    if (!name) return;
    try {
      const collection = await api("/v1/collections", { method: "POST", body: { name } });
      $("collection-name").value = "";
      await loadCollections();
      $("upload-collection").value = collection.id;
      await loadDocuments();
      say("collection-status", `Created collection ${collection.name}.`);
    } catch (error) {
      say("collection-status", error.message, true);
    }
  }

  // The upload's document, followed until it is ready, failed or gone; true once it is ready
  // or failed (said either way), false when it was given up (gone, or too many failed looks).
  async function followUpload(base, doc, name) {
    const row = () => $("document-list").querySelector(`[data-document-id="${CSS.escape(doc.id)}"]`);
    let errors = 0;
    while (reading(doc)) {
      await pause(errors ? lookWait(errors) : POLL_MS);
      if (!key()) return false; // the key was forgotten: the list is gone with it
      try {
        doc = await api(`${base}/${encodeURIComponent(doc.id)}`);
        errors = 0;
      } catch (error) {
        if (error.status === 404) {
          row()?.replaceWith(goneItem(doc.id, name));
          say("collection-status", `${name}: no longer in the collection (deleted before it was read).`, true);
          return false;
        }
        errors += 1;
        if (refusedForGood(error) || errors >= LOOK_ERRORS) {
          say("collection-status", `${name}: stopped looking at it (${error.message}). Reload to look again.`, true);
          return false;
        }
        const looks = `${errors} failed look${errors === 1 ? "" : "s"} in a row`;
        say("collection-status", `${name}: ${doc.status}; ${looks} (${error.message}), looking again.`);
        continue;
      }
      row()?.replaceWith(documentItem(doc));
      say("collection-status", `${name}: ${doc.status}`);
    }
    say("collection-status", `${name}: ${doc.status}${doc.error ? " — " + doc.error : ""}`, doc.status === "failed");
    return true;
  }

  async function upload(event) {
    event.preventDefault();
    const collection = $("upload-collection").value;
    const file = $("upload-file").files[0];
    if (!collection || !file) return say("collection-status", "Choose a collection and a file.", true);
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("title", file.name);
    const base = `/v1/collections/${encodeURIComponent(collection)}/documents`;
    try {
      let doc = await api(base, { method: "POST", body: form });
      $("upload-file").value = "";
      await loadDocuments();
      say("collection-status", `${file.name}: ${doc.status}`);
      if (!(await followUpload(base, doc, file.name))) return;
      await loadCollections();
    } catch (error) {
      say("collection-status", error.message, true);
    }
  }

  // ---- wiring -------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("key-form").addEventListener("submit", useKey);
    $("key-forget").addEventListener("click", forgetKey);
    $("new-chat").addEventListener("click", newChat);
    $("chat-delete").addEventListener("click", (event) =>
      askFirst(event.currentTarget, "this conversation", deleteConversation, "Delete this conversation for good?"),
    );
    $("chat-form").addEventListener("submit", send);
    $("chat-stop").addEventListener("click", () => chat.stop?.abort());
    $("chat-input").addEventListener("keydown", (event) => {
      // Escape stops the answer being streamed, from where the Enter that asked for it was.
      if (event.key === "Escape" && chat.stop) {
        event.preventDefault();
        chat.stop.abort();
        return;
      }
      // An Enter that ends an input method's composition (Japanese, Chinese, Korean) picks the
      // word offered: it is not a send. Safari marks it with keyCode 229 only.
      if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
      event.preventDefault();
      $("chat-form").requestSubmit();
    });
    $("memory-search-form").addEventListener("submit", searchMemories);
    $("memory-refresh").addEventListener("click", () => {
      $("memory-query").value = "";
      loadMemories();
    });
    $("user-id").addEventListener("change", () => {
      // A conversation is one user's: the next turn under another id was refused (403,
      // "belongs to another user") until "New chat". Another user, another conversation, also
      // while an answer streams (it ends in the conversation it was asked in, as on "New chat").
      if (chat.messages.length) {
        newChat();
        say("chat-status", `New conversation, for ${userId() || "no user"}: a conversation is one user's.`);
      }
      saveChat();
      loadMemories();
    });
    $("model").addEventListener("change", saveChat);
    $("memory-more").addEventListener("click", () => loadMemories(true));
    $("collection-create-form").addEventListener("submit", createCollection);
    $("upload-form").addEventListener("submit", upload);
    $("upload-collection").addEventListener("change", () =>
      loadDocuments().catch((error) => say("collection-status", error.message, true)),
    );
    $("document-more").addEventListener("click", () =>
      loadDocuments(true).catch((error) => say("collection-status", error.message, true)),
    );
    const saved = savedChat();
    if (typeof saved.userId === "string") $("user-id").value = saved.userId;
    if (saved.conversationId) startChat(saved.conversationId);
    else newChat();
    showKeyState();
    loadEverything().then(() => key() && saved.conversationId && restoreChat(saved.conversationId, saved.pause));
  });
})();
