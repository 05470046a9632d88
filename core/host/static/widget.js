// The customer chat widget. The protocol is documented in core/host/widget.py.
// Every piece of text from the host or the customer goes through textContent, never
// innerHTML: a name like "<img onerror=...>" must show as those characters.
"use strict";

(() => {
  const STORE_KEY = "inbox-tui.widget";
  const ENDED_STATES = ["wrap_up", "closed_complete", "closed_abandoned"];
  const ATTRIBUTE_KEY = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;
  const MAX_ATTRIBUTES = 10;
  const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;
  const NAME_MAX = 80;
  const LANGUAGE = /^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8}){0,4}$/; // as the host checks it

  const $ = (id) => document.getElementById(id);
  const cfg = JSON.parse($("widget-config").textContent);
  const list = $("messages");
  const body = $("body");

  let ws = null;
  let phase = "idle"; // idle | starting | resuming | live
  let stored = readStored(); // {conversation, ticket, name} of the chat this browser is in
  // The customer's name on their own lines, which this page draws from the acks: the host
  // does not send a socket's own messages back to it.
  let myName = (stored && stored.name) || "";
  let messages = new Map(); // seq -> message frame
  let pending = new Map(); // client_msg_id -> {body, element, failed, tries, timer}
  let chatState = null;
  let agent = null;
  let leaving = false;
  let writingAgain = false; // the chat has ended, and the customer chose to write into it again
  let retries = 0;
  let retryTimer = null;
  let typingTimer = null;

  // ------------------------------------------------------------------ storage

  function readStored() {
    try {
      const value = JSON.parse(localStorage.getItem(STORE_KEY) || "null");
      return value && value.conversation && value.ticket ? value : null;
    } catch {
      return null; // storage disabled or a damaged value: start afresh
    }
  }

  function writeStored(value) {
    stored = value;
    try {
      if (value) localStorage.setItem(STORE_KEY, JSON.stringify(value));
      else localStorage.removeItem(STORE_KEY);
    } catch {
      // Without storage the chat still works; it just does not survive a reload.
    }
  }

  // ------------------------------------------------------------------ views

  function show(pane) {
    for (const id of ["intro", "chat", "ended"]) $(id).hidden = id !== pane;
    $("leave").hidden = pane !== "chat";
  }

  function showIntro(error) {
    phase = "idle";
    show("intro");
    $("form-error").textContent = error || "";
    $("start").disabled = !cfg.available;
    if (!cfg.available) $("form-error").textContent = "Chat is not available right now.";
  }

  function clock(at) {
    return new Date(at * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function messageElement(m) {
    const li = document.createElement("li");
    li.classList.add("msg", m.from === "customer" || m.from === "agent" ? m.from : "system");
    if (m.from !== "system") {
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = `${m.name || ""} · ${clock(m.at)}`;
      li.append(meta);
    }
    const text = document.createElement("div");
    text.className = "body";
    text.textContent = m.body;
    li.append(text);
    if (m.file) {
      // A signed link, valid for a while (a reload signs afresh); the host serves it as a
      // download, so the browser never renders someone's file as a page.
      const link = document.createElement("a");
      link.className = "file";
      link.href = new URL(m.file.replace(/^\//, ""), location.href).href;
      link.download = "";
      link.textContent = "Download";
      li.append(link);
    }
    return li;
  }

  function nearBottom(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 60;
  }

  function addMessage(m) {
    if (messages.has(m.seq)) return;
    messages.set(m.seq, m);
    if (m.client_msg_id && pending.has(m.client_msg_id)) {
      clearTimeout(pending.get(m.client_msg_id).timer);
      pending.get(m.client_msg_id).element.remove();
      pending.delete(m.client_msg_id);
    }
    if (m.from === "agent") setTyping(null);
    const stick = nearBottom(list);
    const el = messageElement(m);
    el.dataset.seq = String(m.seq);
    // Keep seq order; unconfirmed messages (no seq yet) stay last.
    const before = [...list.children].find(
      (child) => child.dataset.seq === undefined || Number(child.dataset.seq) > m.seq,
    );
    list.insertBefore(el, before || null);
    if (stick) list.scrollTop = list.scrollHeight;
    if (isEnded()) renderEnded();
  }

  function setState(state, agentName) {
    chatState = state;
    agent = agentName;
    const status = $("status");
    if (state === "new") status.textContent = "Waiting for an agent…";
    else if (state === "work_in_progress") status.textContent = `You are chatting with ${agent || "an agent"}`;
    else status.textContent = "The chat has ended";
    if (!isEnded()) writingAgain = false; // reopened, or going on in a follow-up
    if (isEnded() && !writingAgain) {
      setTyping(null);
      renderEnded();
      show("ended");
    } else {
      show("chat");
    }
  }

  function isEnded() {
    return ENDED_STATES.includes(chatState);
  }

  function setTyping(name) {
    clearTimeout(typingTimer);
    $("typing").textContent = name ? `${name} is typing…` : "";
    if (name) typingTimer = setTimeout(() => setTyping(null), 5000);
  }

  function sorted() {
    return [...messages.values()].sort((a, b) => a.seq - b.seq);
  }

  function renderEnded() {
    const transcript = $("transcript");
    transcript.replaceChildren(...sorted().map(messageElement));
    const lines = [`${cfg.title} chat ${stored ? stored.conversation : ""}`, ""];
    for (const m of sorted()) {
      const when = new Date(m.at * 1000).toLocaleString();
      lines.push(m.from === "system" ? `[${when}] ${m.body}` : `[${when}] ${m.name}: ${m.body}`);
    }
    const link = $("download");
    link.href = "data:text/plain;charset=utf-8," + encodeURIComponent(lines.join("\n") + "\n");
    link.download = `transcript-${stored ? stored.conversation : "chat"}.txt`;
  }

  function resetChat() {
    messages = new Map();
    pending = new Map();
    list.replaceChildren();
    $("transcript").replaceChildren();
    chatState = null;
    agent = null;
    leaving = false;
    writingAgain = false;
    setTyping(null);
  }

  // ------------------------------------------------------------------ sending

  function newId() {
    // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    return "m" + [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  function transmit(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function sendPending(id) {
    const p = pending.get(id);
    if (!p || phase !== "live") return;
    transmit({ t: "message", body: p.body, client_msg_id: id });
  }

  // The host could not store the line just now (its database or its bus is away: a restart or
  // a failover). It is stored once by its client_msg_id however often it is sent, so the page
  // sends it again by itself, backing off, instead of asking the customer to click.
  function retryLater(id) {
    const p = pending.get(id);
    if (!p) return;
    clearTimeout(p.timer);
    p.element.querySelector(".meta").textContent = "Not sent yet · trying again…";
    const delay = Math.min(15000, 1000 * 2 ** p.tries++);
    p.timer = setTimeout(() => sendPending(id), delay);
  }

  function markFailed(id, why) {
    const p = pending.get(id);
    if (!p) return;
    p.failed = true;
    p.element.classList.add("failed");
    p.element.querySelector(".meta").textContent = `${why} · click to retry`;
  }

  function compose(text) {
    const id = newId();
    const el = messageElement({ from: "customer", name: "Sending…", at: Date.now() / 1000, body: text });
    el.classList.add("pending");
    el.addEventListener("click", () => {
      const p = pending.get(id);
      if (!p || !p.failed) return;
      p.failed = false;
      el.classList.remove("failed");
      el.querySelector(".meta").textContent = "Sending…";
      sendPending(id);
    });
    list.append(el);
    list.scrollTop = list.scrollHeight;
    pending.set(id, { body: text, element: el, failed: false, tries: 0, timer: null });
    sendPending(id);
  }

  // ------------------------------------------------------------------ socket

  function connect(first) {
    clearTimeout(retryTimer);
    const url = new URL("widget/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    const socket = new WebSocket(url);
    ws = socket;
    socket.onopen = () => socket.send(JSON.stringify(first()));
    socket.onmessage = (e) => {
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        return;
      }
      handle(frame);
    };
    socket.onclose = () => {
      if (ws !== socket) return;
      ws = null;
      if (phase === "starting") {
        showIntro("Could not reach the chat service. Please try again.");
      } else if ((phase === "live" || phase === "resuming") && stored && !isEnded() && !leaving) {
        // A dropped connection does not end the chat: come back with the ticket.
        $("status").textContent = "Reconnecting…";
        const delay = Math.min(15000, 500 * 2 ** retries++);
        retryTimer = setTimeout(resume, delay);
      }
    };
  }

  function resume() {
    phase = "resuming";
    connect(() => ({ t: "resume", conversation: stored.conversation, ticket: stored.ticket }));
  }

  function handle(f) {
    switch (f.t) {
      case "started":
        if (phase === "live") {
          // Written long after the end: the chat goes on in a new conversation, whose
          // transcript follows (its seqs start again at 1).
          messages = new Map();
          list.replaceChildren();
        }
        writeStored({ conversation: f.conversation, ticket: f.ticket, name: myName });
        phase = "live";
        retries = 0;
        show("chat");
        body.focus();
        break;
      case "resumed":
        phase = "live";
        retries = 0;
        for (const m of f.messages) {
          if (m.from === "customer" && m.name) myName = m.name;
          addMessage(m);
        }
        setState(f.state, f.agent);
        for (const [id, p] of pending) if (!p.failed) sendPending(id);
        break;
      case "state":
        setState(f.state, f.agent);
        break;
      case "message":
        addMessage(f);
        break;
      case "ack":
        if (pending.has(f.client_msg_id) && !messages.has(f.seq)) {
          const p = pending.get(f.client_msg_id);
          addMessage({ t: "message", seq: f.seq, from: "customer", name: myName, body: p.body, at: Date.now() / 1000, client_msg_id: f.client_msg_id });
        }
        break;
      case "typing":
        if (!isEnded()) setTyping(f.name);
        break;
      case "error":
        onError(f);
        break;
    }
  }

  function onError(f) {
    if (phase === "starting") {
      showIntro(f.message);
      if (ws) ws.close();
    } else if (phase === "resuming" && (f.code === "bad_ticket" || f.code === "unknown_conversation")) {
      writeStored(null);
      if (ws) ws.close();
      resetChat();
      showIntro("Your previous chat is no longer available. You can start a new one.");
    } else if (f.client_msg_id) {
      if (f.code === "rate_limited") {
        setTimeout(() => sendPending(f.client_msg_id), 1500);
      } else if (f.code === "unavailable") {
        retryLater(f.client_msg_id);
      } else {
        markFailed(f.client_msg_id, f.code === "conversation_closed" ? "Not sent: the chat has ended" : `Not sent: ${f.message}`);
      }
    }
  }

  // ------------------------------------------------------------------ form and composer

  function attributes() {
    // Routing hints come from the page's URL (?language=fr), only the keys the channel lets
    // customers set: the host would drop the others, and campaign parameters must not crowd
    // them out of the 10 allowed.
    const allowed = new Set(cfg.attributes || []);
    const out = {};
    for (const [key, value] of new URLSearchParams(location.search)) {
      if (Object.keys(out).length >= MAX_ATTRIBUTES) break;
      if (allowed.has(key) && ATTRIBUTE_KEY.test(key) && !(key in out)) out[key] = value.slice(0, 200);
    }
    return out;
  }

  function startFrame(name, email) {
    // A signed identity from the embedding site (?identity=...), passed on untouched: only
    // the host can check it.
    const frame = { t: "start", name, email, attributes: attributes() };
    const params = new URLSearchParams(location.search);
    const identity = params.get("identity");
    if (identity) frame.identity = identity;
    // The customer's language, for the host's notices: the page's choice, else the browser's.
    const language = params.get("lang") || navigator.language;
    if (language && language.length <= 35 && LANGUAGE.test(language)) frame.language = language;
    return frame;
  }

  $("start-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("name").value.trim();
    const email = $("email").value.trim();
    const nameLength = [...name].length;
    let error = "";
    if (nameLength < 1) error = "Please enter your name.";
    else if (nameLength > NAME_MAX) error = `Your name can be at most ${NAME_MAX} characters.`;
    else if (!EMAIL.test(email)) error = "Please enter a valid e-mail address.";
    $("form-error").textContent = error;
    if (error) return;
    $("start").disabled = true;
    resetChat();
    phase = "starting";
    myName = name;
    connect(() => startFrame(name, email));
  });

  body.maxLength = cfg.max_message_length;
  body.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  body.addEventListener("input", () => {
    const used = body.value.length;
    $("counter").textContent = used > cfg.max_message_length * 0.8 ? `${used} / ${cfg.max_message_length}` : "";
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = body.value;
    if (!text.trim() || (isEnded() && !writingAgain)) return;
    body.value = "";
    $("counter").textContent = "";
    compose(text);
  });

  async function upload(file) {
    $("file-error").textContent = `Sending ${file.name}…`;
    try {
      const response = await fetch(new URL("widget/files", location.href), {
        method: "POST",
        headers: {
          "Content-Type": file.type || "application/octet-stream",
          "X-Filename": encodeURIComponent(file.name),
          "X-Conversation": stored.conversation,
          "X-Ticket": stored.ticket,
        },
        body: file,
      });
      const answer = await response.json();
      // The line announcing the file arrives over the socket like any message.
      $("file-error").textContent = response.ok ? "" : `Not sent: ${answer.message}`;
    } catch {
      $("file-error").textContent = "Not sent: could not reach the chat service.";
    }
  }

  $("file").addEventListener("change", () => {
    const input = $("file");
    const file = input.files && input.files[0];
    input.value = "";
    if (file && stored && !isEnded()) upload(file);
  });

  $("leave").addEventListener("click", () => {
    if (transmit({ t: "leave" })) leaving = true;
  });

  $("write-again").addEventListener("click", () => {
    // The host reopens the chat with the first message (or, long after, starts a new one).
    writingAgain = true;
    show("chat");
    $("status").textContent = "Write your message to open the chat again";
    body.focus();
  });

  $("new-chat").addEventListener("click", () => {
    writeStored(null);
    if (ws) ws.close();
    resetChat();
    showIntro("");
  });

  // ------------------------------------------------------------------ boot

  document.title = cfg.title;
  $("title").textContent = cfg.title;
  $("greeting").textContent = cfg.greeting;
  document.documentElement.style.setProperty("--accent", cfg.accent);
  if (stored) {
    show("chat");
    $("status").textContent = "Reconnecting…";
    resume();
  } else {
    showIntro("");
  }
})();
