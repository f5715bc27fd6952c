/* The playground: sends a prompt over the gateway's WebSocket protocol (docs/protocol.md)
   and shows the stream as it comes. Authenticates with the first frame
   {"type":"auth","token":...} (browsers cannot set an Authorization header), using the
   member's short-lived playground key (fetched from the page's key endpoint with the
   CSRF token; never in the HTML) or a key pasted by the user (kept in this page only). */
(function () {
  "use strict";

  var form = document.getElementById("playground-form");
  if (!form) { return; }
  var $ = function (id) { return document.getElementById(id); };
  var model = $("playground-model"), prompt = $("playground-prompt"), maxTokens = $("playground-max-tokens");
  var pasted = $("playground-api-key"), send = $("playground-send"), cancel = $("playground-cancel");
  var output = $("playground-output"), statusLine = $("playground-status");
  var routeLine = $("playground-route"), usageLine = $("playground-usage"), costLine = $("playground-cost");

  var issued = null;      // {key, expiresAt (ms), websocketUrl} from the key endpoint
  var socket = null;      // the open connection and the key it authenticated with
  var socketKey = null;
  var current = null;     // request_id in flight
  var counter = 0;

  form.hidden = false;

  function setStatus(text, kind) {
    statusLine.textContent = text;
    statusLine.className = "playground-status" + (kind ? " " + kind : "");
  }

  function busy(on) {
    send.disabled = on;
    cancel.disabled = !on;
  }

  function defaultSocketUrl() {
    return (window.location.protocol === "https:" ? "wss://" : "ws://") + window.location.host + "/websocket";
  }

  function playgroundKey() {
    // Reuse the issued key until 30 s before it expires; the server keeps it in the session too.
    if (issued && issued.expiresAt - Date.now() > 30000) { return Promise.resolve(issued); }
    var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
    return fetch(form.dataset.keyUrl, {
      method: "POST", credentials: "same-origin",
      headers: {"X-CSRFToken": token, "Accept": "application/json"}
    }).then(function (response) {
      if (!response.ok) { throw new Error("could not get a playground key (HTTP " + response.status + ")"); }
      return response.json();
    }).then(function (body) {
      issued = {key: body.key, expiresAt: Date.parse(body.expires_at), websocketUrl: body.websocket_url};
      return issued;
    });
  }

  function credentials() {
    var own = pasted.value.trim();
    if (own) { return Promise.resolve({key: own, websocketUrl: (issued && issued.websocketUrl) || defaultSocketUrl()}); }
    return playgroundKey();
  }

  function connect(creds) {
    if (socket && socket.readyState === WebSocket.OPEN && socketKey === creds.key) { return Promise.resolve(socket); }
    if (socket) { socket.close(1000); }
    setStatus("Connecting…");
    return new Promise(function (resolve, reject) {
      var ws = new WebSocket(creds.websocketUrl);
      var settled = false;
      ws.onopen = function () {
        ws.send(JSON.stringify({type: "auth", token: creds.key}));
      };
      ws.onmessage = function (event) {
        var frame;
        try { frame = JSON.parse(event.data); } catch (e) { return; }
        if (!settled) {
          if (frame.type === "auth_ok") {
            settled = true;
            socket = ws; socketKey = creds.key;
            setStatus("Connected as " + frame.key, "ok");
            resolve(ws);
          } else if (frame.type === "error") {
            settled = true;
            reject(new Error(describeError(frame)));
          }
          return;
        }
        handle(frame);
      };
      ws.onclose = function (event) {
        if (!settled) { settled = true; reject(new Error("connection closed (" + event.code + ")")); return; }
        if (socket === ws) { socket = null; socketKey = null; }
        if (current) {
          current = null; busy(false);
          setStatus("Connection closed (" + event.code + ")" + (event.reason ? ": " + event.reason : ""), "error");
        } else if (statusLine.className.indexOf("error") < 0) {
          setStatus("Disconnected (" + event.code + ")");
        }
      };
      ws.onerror = function () { /* onclose follows with the code */ };
    });
  }

  function describeError(frame) {
    return "Error " + frame.code + " " + frame.error + ": " + frame.message;
  }

  function describeRoute(route) {
    if (!route) { return "–"; }
    var text = route.deployment + " (" + route.provider + ")";
    if (route.route) { text += " via route " + route.route + ", strategy " + route.strategy; }
    if (route.reason) { text += " — " + route.reason; }
    if (route.attempts && route.attempts.length) {
      text += "; tried first: " + route.attempts.map(function (a) {
        return a.deployment + (a.code ? " (" + a.code + ")" : "");
      }).join(", ");
    }
    return text;
  }

  function handle(frame) {
    if (frame.request_id && frame.request_id !== current) { return; }
    if (frame.type === "llm_response_start") {
      routeLine.textContent = describeRoute(frame.route);
      setStatus("Streaming…", "ok");
    } else if (frame.type === "llm_token") {
      output.textContent += frame.content;
    } else if (frame.type === "llm_response_end") {
      var u = frame.usage || {};
      usageLine.textContent = u.prompt_tokens + " prompt + " + u.completion_tokens + " completion = " +
        u.total_tokens + " tokens";
      costLine.textContent = "$" + frame.cost_usd;
      setStatus("Done (" + frame.finish_reason + ")", "ok");
      current = null; busy(false);
    } else if (frame.type === "error") {
      setStatus(describeError(frame), "error");
      if (!frame.request_id || frame.request_id === current) { current = null; busy(false); }
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = prompt.value.trim(), max = parseInt(maxTokens.value, 10);
    if (!model.value) { setStatus("Choose a model or route.", "error"); return; }
    if (!text) { setStatus("Write a prompt first.", "error"); return; }
    if (!(max >= 1)) { setStatus("Max tokens must be a whole number of at least 1.", "error"); return; }
    busy(true);
    output.textContent = "";
    routeLine.textContent = usageLine.textContent = costLine.textContent = "–";
    credentials().then(connect).then(function (ws) {
      counter += 1;
      current = "pg-" + Date.now().toString(36) + "-" + counter;
      ws.send(JSON.stringify({
        type: "llm_request", request_id: current, model: model.value, prompt: text,
        parameters: {max_tokens: max, stream: true}
      }));
      setStatus("Waiting for the first token…", "ok");
    }).catch(function (error) {
      current = null; busy(false);
      setStatus(error.message, "error");
    });
  });

  cancel.addEventListener("click", function () {
    if (socket && current) {
      socket.send(JSON.stringify({type: "cancel", request_id: current}));
      setStatus("Cancelling…");
    }
  });

  pasted.addEventListener("change", function () {
    // Another key: the next request opens a connection authenticated with it.
    if (socket) { socket.close(1000); socket = null; socketKey = null; }
  });

  setStatus("Ready");
})();
