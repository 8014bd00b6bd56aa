// The console's live view of a session (templates/console/sessions/detail.html): transcript
// items as they are stored, over /ws/console/…; a file of its own so that the console's
// Content-Security-Policy can forbid inline scripts.
(function () {
  var list = document.getElementById("transcript");
  if (!list || !list.dataset.liveUrl) return;
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var url = scheme + location.host + list.dataset.liveUrl;
  // The live view reconnects whenever its socket closes (a deploy, a Redis blip, a proxy
  // timeout), with a growing, jittered delay, except once the session has ended or is not found.
  var CLOSE_NOT_FOUND = 4404, ended = false, failures = 0;
  function open() {
    var socket = new WebSocket(url);
    socket.onopen = function () { failures = 0; };
    socket.onmessage = function (message) { onMessage(socket, message); };
    socket.onclose = function (event) {
      if (ended || event.code === CLOSE_NOT_FOUND) return;
      failures += 1;
      var delay = Math.min(30000, 500 * Math.pow(2, failures - 1));
      setTimeout(open, delay / 2 + Math.random() * delay / 2);
    };
  }
  function onMessage(socket, message) {
    var data = JSON.parse(message.data);
    if (data.type === "segment") {
      var note = document.createElement("li"); note.className = "tool";
      note.textContent = "— the conversation continued in a new upstream session (" + data.reason + ") —";
      list.appendChild(note);
      return;
    }
    if (data.type === "ended") {
      ended = true;
      socket.close();
      document.getElementById("ended").textContent = "ended (" + data.reason + ") — reload for totals";
      var live = document.getElementById("live-indicator"); if (live) live.remove();
      return;
    }
    var item = data.item, empty = document.getElementById("transcript-empty");
    if (empty) empty.remove();
    var li = list.querySelector('[data-item="' + item.item_id + '"]') || document.createElement("li");
    li.dataset.item = item.item_id;
    li.className = item.role === "user" ? "user" : (item.kind !== "message" ? "tool" : "");
    var who = document.createElement("span"); who.className = "who"; who.textContent = item.role;
    var text = document.createTextNode(" " + (item.kind === "function_call" ? (item.data.name + "(" + item.data.arguments + ")") : item.text));
    li.replaceChildren(who, text);
    // A tool's answer shows how long the tool took, as the page does after a reload.
    if (item.kind === "function_call_output" && item.data && item.data.latency_ms != null) {
      var latency = document.createElement("span");
      latency.className = "badge tool-latency";
      latency.textContent = item.data.latency_ms + " ms";
      li.append(" ", latency);
    }
    var siblings = Array.prototype.slice.call(list.children);
    li.dataset.sequence = item.sequence;
    var after = siblings.find(function (node) { return Number(node.dataset.sequence || 1e9) > item.sequence && node !== li; });
    list.insertBefore(li, after || null);
  }
  open();
})();
