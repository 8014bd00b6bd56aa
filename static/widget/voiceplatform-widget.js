/*!
 * VoicePlatform voice widget: one file, no dependencies, no build step.
 *
 * Embed with one tag:
 *   <script src="https://PLATFORM/static/widget/voiceplatform-widget.js"
 *           data-key="vp_pk_..." data-agent="12" async></script>
 *
 * The platform's base URL is this script's own origin. Everything renders inside one Shadow DOM
 * root attached to a single host element; CSS classes are prefixed `vpw-`; the only global is
 * `window.VoicePlatformWidget` ({open, close, init, state}).
 *
 * Audio: the microphone goes through an AudioWorklet that resamples to 24 kHz PCM16 (or 8 kHz
 * G.711 for pcmu/pcma agents) and hands 20 ms frames to the page, which sends them as
 * input_audio_buffer.append. Answers are decoded, resampled to the AudioContext's rate and
 * queued in a playback AudioWorklet (a Float32 ring buffer) that counts the samples it has
 * actually played per item, so that a barge-in truncates the item at the right millisecond.
 */
(function () {
  "use strict";

  if (window.VoicePlatformWidget && window.VoicePlatformWidget.__vpw) {
    return; // included twice: keep the first
  }

  // document.currentScript is only set during this initial, synchronous execution.
  var ownScript = document.currentScript;
  var scriptConfig = null;
  if (ownScript && ownScript.src) {
    scriptConfig = {
      baseUrl: new URL(ownScript.src, window.location.href).origin,
      key: ownScript.getAttribute("data-key") || "",
      agent: ownScript.getAttribute("data-agent") || "",
      // The console's try-it page: a same-origin URL that mints a token for a logged-in member.
      tokenUrl: ownScript.getAttribute("data-token-url") || "",
      csrfToken: ownScript.getAttribute("data-csrf-token") || "",
      openAtStart: ownScript.getAttribute("data-open") === "true",
      autoMount: ownScript.getAttribute("data-auto") !== "false",
      variables: attributeVariables(ownScript),
    };
  }

  // The console's try-it page: the values typed in its prompt variable fields.
  function consoleVariables() {
    var variables = {};
    var fields = document.querySelectorAll("[data-vpw-variable]");
    for (var i = 0; i < fields.length; i++) {
      variables[fields[i].getAttribute("data-vpw-variable")] = fields[i].value;
    }
    return variables;
  }

  // Prompt variables from the tag's other data-* attributes: data-customer-name="Ada" fills
  // {{customer_name}} (the agent names the variables it accepts; the platform drops the rest).
  function attributeVariables(script) {
    var own = { key: 1, agent: 1, token_url: 1, csrf_token: 1, open: 1, auto: 1 };
    var variables = {};
    for (var i = 0; i < script.attributes.length; i++) {
      var attribute = script.attributes[i];
      if (attribute.name.indexOf("data-") !== 0) continue;
      var name = attribute.name.slice(5).replace(/-/g, "_");
      if (!own[name]) variables[name] = attribute.value;
    }
    return variables;
  }

  var OUTPUT_RATE_PCM = 24000;
  var G711_RATE = 8000;
  var FRAME_MS = 20;
  var TOKEN_REUSE_LIMIT_MS = 45000; // tokens live 60 s; ask for a fresh one after a slow prompt

  // --- shared DSP, also shipped into the AudioWorklet (via Function.prototype.toString) ------

  // A streaming linear-interpolation resampler: keeps its position and last sample across
  // chunks, so consecutive chunks join without a click or a gap.
  function VpwLinearResampler(inRate, outRate) {
    this.step = inRate / outRate;
    this.pos = 0;
    this.last = 0;
  }
  VpwLinearResampler.prototype.process = function (input) {
    var n = input.length;
    var step = this.step;
    var count = 0;
    var pos = this.pos;
    // Count first, so that the output is one exact-length typed array.
    var p = pos;
    while (p < n) {
      count++;
      p += step;
    }
    var out = new Float32Array(count);
    for (var k = 0; k < count; k++) {
      var i = Math.floor(pos);
      var frac = pos - i;
      var a = i === 0 ? this.last : input[i - 1];
      var b = input[i];
      out[k] = a + (b - a) * frac;
      pos += step;
    }
    if (n > 0) {
      this.pos = pos - n;
      this.last = input[n - 1];
    }
    return out;
  };

  // A streaming box-filter decimator (averages the input samples of each output interval):
  // a cheap low-pass that keeps speech intelligible when going down from 44.1/48 kHz.
  function VpwBoxDecimator(inRate, outRate) {
    this.step = inRate / outRate;
    this.next = this.step;
    this.seen = 0;
    this.sum = 0;
    this.count = 0;
  }
  VpwBoxDecimator.prototype.process = function (input, emit) {
    for (var i = 0; i < input.length; i++) {
      this.sum += input[i];
      this.count++;
      this.seen++;
      if (this.seen >= this.next) {
        emit(this.sum / this.count);
        this.sum = 0;
        this.count = 0;
        this.next += this.step;
      }
    }
    if (this.seen > 1e9) {
      this.seen -= 1e9;
      this.next -= 1e9;
    }
  };

  function vpwLinearToMulaw(sample) {
    var s = Math.max(-32768, Math.min(32767, Math.round(sample * 32767)));
    var sign = s < 0 ? 0x80 : 0;
    if (s < 0) s = -s;
    if (s > 32635) s = 32635;
    s += 0x84;
    var exponent = 7;
    for (var mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
    var mantissa = (s >> (exponent + 3)) & 0x0f;
    return ~(sign | (exponent << 4) | mantissa) & 0xff;
  }

  function vpwLinearToAlaw(sample) {
    var s = Math.max(-32768, Math.min(32767, Math.round(sample * 32767)));
    var sign = s >= 0 ? 0x80 : 0;
    if (s < 0) s = -s - 1;
    if (s > 32767) s = 32767;
    var out;
    if (s < 256) {
      out = s >> 4;
    } else {
      var exponent = 7;
      for (var mask = 0x4000; (s & mask) === 0 && exponent > 1; mask >>= 1) exponent--;
      out = (exponent << 4) | ((s >> (exponent + 3)) & 0x0f);
    }
    return (out | sign) ^ 0x55;
  }

  function mulawToLinear(byte) {
    var u = ~byte & 0xff;
    var t = ((u & 0x0f) << 3) + 0x84;
    t <<= (u & 0x70) >> 4;
    return (u & 0x80 ? 0x84 - t : t - 0x84) / 32768;
  }

  function alawToLinear(byte) {
    var a = byte ^ 0x55;
    var t = (a & 0x0f) << 4;
    var seg = (a & 0x70) >> 4;
    if (seg === 0) t += 8;
    else if (seg === 1) t += 0x108;
    else t = (t + 0x108) << (seg - 1);
    return (a & 0x80 ? t : -t) / 32768;
  }

  // --- the AudioWorklet module (loaded from a Blob URL) --------------------------------------

  var WORKLET_SOURCE = [
    VpwLinearResampler.toString(),
    "VpwLinearResampler.prototype.process = " + VpwLinearResampler.prototype.process.toString() + ";",
    VpwBoxDecimator.toString(),
    "VpwBoxDecimator.prototype.process = " + VpwBoxDecimator.prototype.process.toString() + ";",
    vpwLinearToMulaw.toString(),
    vpwLinearToAlaw.toString(),
    // Microphone → 20 ms frames at the agent's input rate and encoding.
    "class VpwCapture extends AudioWorkletProcessor {",
    "  constructor(options) {",
    "    super();",
    "    var o = options.processorOptions;",
    "    this.encoding = o.encoding;",
    "    this.frameSamples = Math.round(o.outRate * o.frameMs / 1000);",
    "    this.bytesPerSample = o.encoding === 'pcm16' ? 2 : 1;",
    "    this.resampler = sampleRate >= o.outRate",
    "      ? new VpwBoxDecimator(sampleRate, o.outRate)",
    "      : new VpwLinearResampler(sampleRate, o.outRate);",
    "    this.down = sampleRate >= o.outRate;",
    "    this.enabled = true;",
    "    this.newFrame();",
    "    var self = this;",
    "    this.emitSample = function (x) { self.push(x); };",
    "    this.port.onmessage = function (e) {",
    "      if (e.data && e.data.type === 'enabled') { self.enabled = !!e.data.value; self.newFrame(); }",
    "    };",
    "  }",
    "  newFrame() {",
    "    this.buffer = new ArrayBuffer(this.frameSamples * this.bytesPerSample);",
    "    this.view = this.encoding === 'pcm16' ? new DataView(this.buffer) : new Uint8Array(this.buffer);",
    "    this.fill = 0;",
    "  }",
    "  push(x) {",
    "    if (this.encoding === 'pcm16') {",
    "      var s = Math.max(-1, Math.min(1, x));",
    "      this.view.setInt16(this.fill * 2, s < 0 ? s * 32768 : s * 32767, true);",
    "    } else if (this.encoding === 'pcmu') {",
    "      this.view[this.fill] = vpwLinearToMulaw(x);",
    "    } else {",
    "      this.view[this.fill] = vpwLinearToAlaw(x);",
    "    }",
    "    this.fill++;",
    "    if (this.fill === this.frameSamples) {",
    "      this.port.postMessage(this.buffer, [this.buffer]);",
    "      this.newFrame();",
    "    }",
    "  }",
    "  process(inputs) {",
    "    var input = inputs[0];",
    "    if (!this.enabled || !input || !input.length) return true;",
    "    var mono = input[0];",
    "    if (input.length > 1) {",
    "      mono = new Float32Array(input[0].length);",
    "      for (var c = 0; c < input.length; c++) for (var i = 0; i < mono.length; i++) mono[i] += input[c][i] / input.length;",
    "    }",
    "    if (this.down) this.resampler.process(mono, this.emitSample);",
    "    else { var up = this.resampler.process(mono); for (var j = 0; j < up.length; j++) this.push(up[j]); }",
    "    return true;",
    "  }",
    "}",
    "registerProcessor('vpw-capture', VpwCapture);",
    // Queue player: a Float32 ring buffer at the context rate, with per-chunk segments that
    // say which item each sample belongs to; it reports what it has really played.
    "class VpwPlayer extends AudioWorkletProcessor {",
    "  constructor() {",
    "    super();",
    "    this.capacity = Math.max(1, Math.round(sampleRate * 20));",
    "    this.ring = new Float32Array(this.capacity);",
    "    this.readAt = 0;",
    "    this.size = 0;",
    "    this.segments = [];",
    "    this.played = {};",
    "    this.changed = {};",
    "    this.total = 0;",
    "    this.chunks = 0;",
    "    this.sinceReport = 0;",
    "    this.reportEvery = Math.round(sampleRate * 0.025);",
    "    this.wasPlaying = false;",
    "    var self = this;",
    "    this.port.onmessage = function (e) { self.onMessage(e.data); };",
    "  }",
    "  onMessage(m) {",
    "    if (m.type === 'push') this.push(m.item, m.samples);",
    "    else if (m.type === 'flush') {",
    "      var cut = this.segments.length ? this.segments[0].item : null;",
    "      var queued = this.size;",
    "      this.size = 0; this.readAt = 0; this.segments = [];",
    "      this.port.postMessage({ type: 'flushed', seq: m.seq, item: cut, itemPlayed: cut ? (this.played[cut] || 0) : 0,",
    "        droppedSamples: queued, total: this.total, chunks: this.chunks, items: this.changed, queued: 0 });",
    "      this.changed = {};",
    "    }",
    "  }",
    "  grow(needed) {",
    "    var capacity = this.capacity;",
    "    while (capacity < needed) capacity *= 2;",
    "    var ring = new Float32Array(capacity);",
    "    for (var i = 0; i < this.size; i++) ring[i] = this.ring[(this.readAt + i) % this.capacity];",
    "    this.ring = ring; this.capacity = capacity; this.readAt = 0;",
    "  }",
    "  push(item, samples) {",
    "    if (!samples.length) return;",
    "    if (this.size + samples.length > this.capacity) this.grow(this.size + samples.length);",
    "    var writeAt = (this.readAt + this.size) % this.capacity;",
    "    var first = Math.min(samples.length, this.capacity - writeAt);",
    "    this.ring.set(samples.subarray(0, first), writeAt);",
    "    if (first < samples.length) this.ring.set(samples.subarray(first), 0);",
    "    this.size += samples.length;",
    "    this.segments.push({ item: item, left: samples.length });",
    "  }",
    "  process(inputs, outputs) {",
    "    var out = outputs[0][0];",
    "    var n = out.length;",
    "    var i = 0;",
    "    while (i < n && this.size > 0) {",
    "      var seg = this.segments[0];",
    "      var take = Math.min(n - i, seg.left, this.capacity - this.readAt);",
    "      out.set(this.ring.subarray(this.readAt, this.readAt + take), i);",
    "      i += take;",
    "      this.readAt = (this.readAt + take) % this.capacity;",
    "      this.size -= take;",
    "      seg.left -= take;",
    "      this.played[seg.item] = (this.played[seg.item] || 0) + take;",
    "      this.changed[seg.item] = this.played[seg.item];",
    "      this.total += take;",
    "      if (seg.left === 0) { this.segments.shift(); this.chunks++; }",
    "    }",
    "    if (i < n) out.fill(0, i);",
    "    for (var c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);",
    "    var playing = this.size > 0;",
    "    this.sinceReport += n;",
    "    if ((playing || this.wasPlaying) && (this.sinceReport >= this.reportEvery || !playing)) {",
    "      this.port.postMessage({ type: 'progress', items: this.changed, total: this.total, chunks: this.chunks, queued: this.size });",
    "      this.changed = {};",
    "      this.sinceReport = 0;",
    "    }",
    "    this.wasPlaying = playing;",
    "    return true;",
    "  }",
    "}",
    "registerProcessor('vpw-player', VpwPlayer);",
  ].join("\n");

  // --- small helpers -------------------------------------------------------------------------

  function bytesToBase64(bytes) {
    var binary = "";
    for (var i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }

  function base64ToBytes(text) {
    var binary = atob(text);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function formatInfo(name) {
    if (name === "audio/pcmu") return { encoding: "pcmu", rate: G711_RATE, bytesPerSample: 1 };
    if (name === "audio/pcma") return { encoding: "pcma", rate: G711_RATE, bytesPerSample: 1 };
    return { encoding: "pcm16", rate: OUTPUT_RATE_PCM, bytesPerSample: 2 };
  }

  function decodeAudio(bytes, encoding) {
    var out;
    if (encoding === "pcm16") {
      var count = bytes.length >> 1;
      var view = new DataView(bytes.buffer, bytes.byteOffset, count * 2);
      out = new Float32Array(count);
      for (var i = 0; i < count; i++) out[i] = view.getInt16(i * 2, true) / 32768;
      return out;
    }
    var decode = encoding === "pcmu" ? mulawToLinear : alawToLinear;
    out = new Float32Array(bytes.length);
    for (var j = 0; j < bytes.length; j++) out[j] = decode(bytes[j]);
    return out;
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  // What the end user reads for each refusal or failure (never a raw exception).
  var MESSAGES = {
    microphone_denied:
      "Microphone access was denied. Allow the microphone for this site, then try again.",
    microphone_missing: "No microphone was found on this device.",
    microphone_unavailable: "The microphone could not be started.",
    audio_unsupported: "This browser cannot run the voice assistant.",
    origin_not_allowed: "This website is not allowed to use this voice assistant.",
    invalid_widget_key: "This voice assistant is not set up correctly (invalid key).",
    invalid_token: "The conversation could not be verified. Please reconnect.",
    token_missing: "The conversation could not be verified. Please reconnect.",
    token_invalid: "The conversation could not be verified. Please reconnect.",
    token_expired: "The conversation took too long to start. Please reconnect.",
    token_used: "This conversation was already started elsewhere. Please reconnect.",
    token_revoked: "This voice assistant's key was withdrawn by the site's team.",
    rate_limited: "Too many conversations were started from here. Please wait a minute and try again.",
    too_many_widget_sessions: "Too many conversations are running right now. Please try again in a few minutes.",
    agent_not_found: "This voice assistant could not be found.",
    too_many_sessions: "Too many conversations are running right now. Please try again in a few minutes.",
    budget_exhausted: "The voice assistant is unavailable right now (usage limit reached).",
    tenant_suspended: "This voice assistant is currently unavailable.",
    session_ended: "The conversation was ended by the site's team.",
    session_max_duration: "The conversation reached its maximum length.",
    call_ended: "The assistant ended the conversation.",
    call_transferred: "The conversation was transferred.",
    connection_lost: "The connection was lost.",
    upstream_unavailable: "The voice service is temporarily unavailable.",
    policy_violation: "The connection was closed by the server.",
    server_error: "Something went wrong on our side.",
    server_restarting: "The voice assistant is restarting. Please reconnect in a moment.",
    unavailable: "The voice assistant could not be reached.",
  };

  // The widget's own words (not the agent's): English, and the languages a widget key may
  // choose in the console (tenants.models.WidgetLanguage). A missing entry falls back to English.
  var UI = {
    title: "Voice assistant",
    close_label: "Close and end the conversation",
    empty: "Speak after the status says \u201clistening\u201d.",
    reconnect: "Reconnect",
    agree: "Agree and start",
    mute: "Mute",
    unmute: "Unmute",
    picture: "Picture",
    picture_title: "Send a picture",
    end: "End",
    open_label: "Talk to our voice assistant",
    close_panel_label: "Close the voice assistant",
    connecting: "Connecting\u2026",
    reconnecting: "Reconnecting\u2026",
    speaking: "Speaking\u2026",
    muted: "Muted",
    listening: "Listening\u2026",
    ended: "Conversation ended.",
    has_ended: "The conversation has ended.",
    start_again: "Start again",
    try_again: "Try again",
    recorded: "This conversation is recorded.",
    recorded_status: "This conversation is recorded",
    continued: "conversation continued",
  };
  var TRANSLATIONS = {
    fr: {
      title: "Assistant vocal",
      close_label: "Fermer et terminer la conversation",
      empty: "Parlez quand le statut indique \u00ab\u00a0\u00e0 l\u2019\u00e9coute\u00a0\u00bb.",
      reconnect: "Se reconnecter",
      agree: "Accepter et commencer",
      mute: "Couper le micro",
      unmute: "R\u00e9activer le micro",
      picture: "Image",
      picture_title: "Envoyer une image",
      end: "Terminer",
      open_label: "Parler \u00e0 notre assistant vocal",
      close_panel_label: "Fermer l\u2019assistant vocal",
      connecting: "Connexion\u2026",
      reconnecting: "Reconnexion\u2026",
      speaking: "R\u00e9ponse en cours\u2026",
      muted: "Micro coup\u00e9",
      listening: "\u00c0 l\u2019\u00e9coute\u2026",
      ended: "Conversation termin\u00e9e.",
      has_ended: "La conversation est termin\u00e9e.",
      start_again: "Recommencer",
      try_again: "R\u00e9essayer",
      recorded: "Cette conversation est enregistr\u00e9e.",
      recorded_status: "Cette conversation est enregistr\u00e9e",
      continued: "la conversation continue",
      microphone_denied: "L\u2019acc\u00e8s au micro a \u00e9t\u00e9 refus\u00e9. Autorisez le micro pour ce site, puis r\u00e9essayez.",
      microphone_missing: "Aucun micro n\u2019a \u00e9t\u00e9 trouv\u00e9 sur cet appareil.",
      microphone_unavailable: "Le micro n\u2019a pas pu d\u00e9marrer.",
      audio_unsupported: "Ce navigateur ne peut pas faire fonctionner l\u2019assistant vocal.",
      origin_not_allowed: "Ce site n\u2019est pas autoris\u00e9 \u00e0 utiliser cet assistant vocal.",
      invalid_widget_key: "Cet assistant vocal est mal configur\u00e9 (cl\u00e9 invalide).",
      invalid_token: "La conversation n\u2019a pas pu \u00eatre v\u00e9rifi\u00e9e. Reconnectez-vous.",
      token_missing: "La conversation n\u2019a pas pu \u00eatre v\u00e9rifi\u00e9e. Reconnectez-vous.",
      token_invalid: "La conversation n\u2019a pas pu \u00eatre v\u00e9rifi\u00e9e. Reconnectez-vous.",
      token_expired: "La conversation a mis trop de temps \u00e0 d\u00e9marrer. Reconnectez-vous.",
      token_used: "Cette conversation a d\u00e9j\u00e0 \u00e9t\u00e9 ouverte ailleurs. Reconnectez-vous.",
      token_revoked: "La cl\u00e9 de cet assistant vocal a \u00e9t\u00e9 retir\u00e9e par l\u2019\u00e9quipe du site.",
      rate_limited: "Trop de conversations ont \u00e9t\u00e9 ouvertes d\u2019ici. Attendez une minute et r\u00e9essayez.",
      too_many_widget_sessions: "Trop de conversations sont en cours. R\u00e9essayez dans quelques minutes.",
      agent_not_found: "Cet assistant vocal est introuvable.",
      too_many_sessions: "Trop de conversations sont en cours. R\u00e9essayez dans quelques minutes.",
      budget_exhausted: "L\u2019assistant vocal est indisponible pour le moment (limite d\u2019utilisation atteinte).",
      tenant_suspended: "Cet assistant vocal est actuellement indisponible.",
      session_ended: "La conversation a \u00e9t\u00e9 termin\u00e9e par l\u2019\u00e9quipe du site.",
      session_max_duration: "La conversation a atteint sa dur\u00e9e maximale.",
      connection_lost: "La connexion a \u00e9t\u00e9 perdue.",
      upstream_unavailable: "Le service vocal est momentan\u00e9ment indisponible.",
      policy_violation: "La connexion a \u00e9t\u00e9 ferm\u00e9e par le serveur.",
      server_error: "Une erreur s\u2019est produite de notre c\u00f4t\u00e9.",
      server_restarting: "L\u2019assistant vocal red\u00e9marre. Reconnectez-vous dans un instant.",
      unavailable: "L\u2019assistant vocal est injoignable.",
    },
    de: {
      title: "Sprachassistent",
      close_label: "Schlie\u00dfen und das Gespr\u00e4ch beenden",
      empty: "Sprechen Sie, sobald der Status \u201eH\u00f6rt zu\u201c anzeigt.",
      reconnect: "Neu verbinden",
      agree: "Zustimmen und starten",
      mute: "Stumm",
      unmute: "Ton an",
      picture: "Bild",
      picture_title: "Ein Bild senden",
      end: "Beenden",
      open_label: "Mit unserem Sprachassistenten sprechen",
      close_panel_label: "Den Sprachassistenten schlie\u00dfen",
      connecting: "Verbinde\u2026",
      reconnecting: "Verbinde erneut\u2026",
      speaking: "Spricht\u2026",
      muted: "Stummgeschaltet",
      listening: "H\u00f6rt zu\u2026",
      ended: "Gespr\u00e4ch beendet.",
      has_ended: "Das Gespr\u00e4ch ist beendet.",
      start_again: "Neu beginnen",
      try_again: "Erneut versuchen",
      recorded: "Dieses Gespr\u00e4ch wird aufgezeichnet.",
      recorded_status: "Dieses Gespr\u00e4ch wird aufgezeichnet",
      continued: "Gespr\u00e4ch wird fortgesetzt",
      microphone_denied: "Der Zugriff auf das Mikrofon wurde verweigert. Erlauben Sie das Mikrofon f\u00fcr diese Seite und versuchen Sie es erneut.",
      microphone_missing: "Auf diesem Ger\u00e4t wurde kein Mikrofon gefunden.",
      microphone_unavailable: "Das Mikrofon konnte nicht gestartet werden.",
      audio_unsupported: "Dieser Browser kann den Sprachassistenten nicht ausf\u00fchren.",
      origin_not_allowed: "Diese Website darf diesen Sprachassistenten nicht verwenden.",
      invalid_widget_key: "Dieser Sprachassistent ist nicht richtig eingerichtet (ung\u00fcltiger Schl\u00fcssel).",
      invalid_token: "Das Gespr\u00e4ch konnte nicht gepr\u00fcft werden. Bitte neu verbinden.",
      token_missing: "Das Gespr\u00e4ch konnte nicht gepr\u00fcft werden. Bitte neu verbinden.",
      token_invalid: "Das Gespr\u00e4ch konnte nicht gepr\u00fcft werden. Bitte neu verbinden.",
      token_expired: "Das Gespr\u00e4ch hat zu lange zum Starten gebraucht. Bitte neu verbinden.",
      token_used: "Dieses Gespr\u00e4ch wurde bereits anderswo gestartet. Bitte neu verbinden.",
      token_revoked: "Der Schl\u00fcssel dieses Sprachassistenten wurde vom Team der Website zur\u00fcckgezogen.",
      rate_limited: "Von hier wurden zu viele Gespr\u00e4che gestartet. Bitte warten Sie eine Minute.",
      too_many_widget_sessions: "Gerade laufen zu viele Gespr\u00e4che. Bitte versuchen Sie es in ein paar Minuten erneut.",
      agent_not_found: "Dieser Sprachassistent wurde nicht gefunden.",
      too_many_sessions: "Gerade laufen zu viele Gespr\u00e4che. Bitte versuchen Sie es in ein paar Minuten erneut.",
      budget_exhausted: "Der Sprachassistent ist gerade nicht verf\u00fcgbar (Nutzungsgrenze erreicht).",
      tenant_suspended: "Dieser Sprachassistent ist derzeit nicht verf\u00fcgbar.",
      session_ended: "Das Gespr\u00e4ch wurde vom Team der Website beendet.",
      session_max_duration: "Das Gespr\u00e4ch hat seine H\u00f6chstdauer erreicht.",
      connection_lost: "Die Verbindung wurde unterbrochen.",
      upstream_unavailable: "Der Sprachdienst ist vor\u00fcbergehend nicht verf\u00fcgbar.",
      policy_violation: "Die Verbindung wurde vom Server geschlossen.",
      server_error: "Bei uns ist etwas schiefgelaufen.",
      server_restarting: "Der Sprachassistent startet neu. Bitte verbinden Sie sich gleich erneut.",
      unavailable: "Der Sprachassistent ist nicht erreichbar.",
    },
    es: {
      title: "Asistente de voz",
      close_label: "Cerrar y terminar la conversaci\u00f3n",
      empty: "Hable cuando el estado diga \u00abescuchando\u00bb.",
      reconnect: "Reconectar",
      agree: "Aceptar y empezar",
      mute: "Silenciar",
      unmute: "Activar micr\u00f3fono",
      picture: "Imagen",
      picture_title: "Enviar una imagen",
      end: "Terminar",
      open_label: "Hablar con nuestro asistente de voz",
      close_panel_label: "Cerrar el asistente de voz",
      connecting: "Conectando\u2026",
      reconnecting: "Reconectando\u2026",
      speaking: "Hablando\u2026",
      muted: "Silenciado",
      listening: "Escuchando\u2026",
      ended: "Conversaci\u00f3n terminada.",
      has_ended: "La conversaci\u00f3n ha terminado.",
      start_again: "Empezar de nuevo",
      try_again: "Intentar de nuevo",
      recorded: "Esta conversaci\u00f3n se graba.",
      recorded_status: "Esta conversaci\u00f3n se graba",
      continued: "la conversaci\u00f3n contin\u00faa",
      microphone_denied: "Se deneg\u00f3 el acceso al micr\u00f3fono. Permita el micr\u00f3fono para este sitio e int\u00e9ntelo de nuevo.",
      microphone_missing: "No se encontr\u00f3 ning\u00fan micr\u00f3fono en este dispositivo.",
      microphone_unavailable: "No se pudo iniciar el micr\u00f3fono.",
      audio_unsupported: "Este navegador no puede ejecutar el asistente de voz.",
      origin_not_allowed: "Este sitio web no puede usar este asistente de voz.",
      invalid_widget_key: "Este asistente de voz no est\u00e1 bien configurado (clave no v\u00e1lida).",
      invalid_token: "No se pudo verificar la conversaci\u00f3n. Vuelva a conectar.",
      token_missing: "No se pudo verificar la conversaci\u00f3n. Vuelva a conectar.",
      token_invalid: "No se pudo verificar la conversaci\u00f3n. Vuelva a conectar.",
      token_expired: "La conversaci\u00f3n tard\u00f3 demasiado en empezar. Vuelva a conectar.",
      token_used: "Esta conversaci\u00f3n ya se inici\u00f3 en otro lugar. Vuelva a conectar.",
      token_revoked: "El equipo del sitio retir\u00f3 la clave de este asistente de voz.",
      rate_limited: "Se iniciaron demasiadas conversaciones desde aqu\u00ed. Espere un minuto e int\u00e9ntelo de nuevo.",
      too_many_widget_sessions: "Hay demasiadas conversaciones en curso. Int\u00e9ntelo de nuevo en unos minutos.",
      agent_not_found: "No se encontr\u00f3 este asistente de voz.",
      too_many_sessions: "Hay demasiadas conversaciones en curso. Int\u00e9ntelo de nuevo en unos minutos.",
      budget_exhausted: "El asistente de voz no est\u00e1 disponible ahora (l\u00edmite de uso alcanzado).",
      tenant_suspended: "Este asistente de voz no est\u00e1 disponible por ahora.",
      session_ended: "El equipo del sitio termin\u00f3 la conversaci\u00f3n.",
      session_max_duration: "La conversaci\u00f3n alcanz\u00f3 su duraci\u00f3n m\u00e1xima.",
      connection_lost: "Se perdi\u00f3 la conexi\u00f3n.",
      upstream_unavailable: "El servicio de voz no est\u00e1 disponible temporalmente.",
      policy_violation: "El servidor cerr\u00f3 la conexi\u00f3n.",
      server_error: "Algo sali\u00f3 mal de nuestro lado.",
      server_restarting: "El asistente de voz se est\u00e1 reiniciando. Vuelva a conectar en un momento.",
      unavailable: "No se pudo contactar con el asistente de voz.",
    },
  };
  var POSITIONS = { "bottom-right": 1, "bottom-left": 1, "top-right": 1, "top-left": 1 };
  var COLOUR = /^#[0-9a-fA-F]{6}$/;

  var CLOSE_CODES = {
    4401: "invalid_token",
    4403: "origin_not_allowed",
    4404: "agent_not_found",
    4429: "too_many_sessions",
    4402: "budget_exhausted",
    4000: "session_ended",
    1008: "policy_violation",
    1011: "connection_lost",
    1013: "upstream_unavailable",
    1006: "connection_lost",
    1001: "connection_lost",
  };
  // Refusals a reconnect cannot fix (a retry would be refused the same way).
  var FINAL = {
    origin_not_allowed: 1,
    invalid_widget_key: 1,
    agent_not_found: 1,
    tenant_suspended: 1,
    budget_exhausted: 1,
    audio_unsupported: 1,
    microphone_missing: 1,
  };
  // A server restarting for a deploy closes with 1012 (Service Restart) or its twin 4012 (Daphne
  // sends no 1012) and reason/error code "server_restarting": reconnect with a fresh token,
  // keeping the microphone and the audio graph, after a short, growing, jittered delay.
  var RESTART_CLOSE_CODES = { 1012: 1, 4012: 1 };
  var RESTART_ATTEMPTS = 8; // about 20 s of tries: long enough for a single server to restart
  var RESTART_FIRST_DELAY_MS = 300;
  var RESTART_MAX_DELAY_MS = 8000;
  // Error events that do not end anything (races around barge-in, a dropped frame).
  var QUIET_ERRORS = {
    response_cancel_not_active: 1,
    conversation_already_has_active_response: 1,
    audio_rate_exceeded: 1,
    item_not_found: 1,
  };

  var CSS = [
    ":host { all: initial; }",
    ".vpw-root { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;",
    "  display: flex; flex-direction: column; align-items: flex-end;",
    "  font: 14px/1.4 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1d2430; }",
    // The key's appearance (set in the console): position, and two colours as custom properties.
    ".vpw-root.vpw-pos-bottom-left, .vpw-root.vpw-pos-top-left { right: auto; left: 20px; align-items: flex-start; }",
    ".vpw-root.vpw-pos-top-right, .vpw-root.vpw-pos-top-left { bottom: auto; top: 20px; flex-direction: column-reverse; }",
    ".vpw-pos-top-right .vpw-panel, .vpw-pos-top-left .vpw-panel { margin-bottom: 0; margin-top: 12px; }",
    ".vpw-root.vpw-contained { position: absolute; }",
    ".vpw-launcher { width: 56px; height: 56px; border-radius: 50%; border: 0; cursor: pointer;",
    "  background: var(--vpw-accent, #0f766e); color: var(--vpw-on-accent, #fff); box-shadow: 0 4px 14px rgba(0,0,0,.25);",
    "  display: flex; align-items: center; justify-content: center; flex: none; }",
    ".vpw-launcher.vpw-labelled { width: auto; max-width: calc(100vw - 40px); border-radius: 28px; padding: 0 18px 0 14px; gap: 8px;",
    "  font: 600 15px/1 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; white-space: nowrap; }",
    ".vpw-launcher:focus-visible, .vpw-btn:focus-visible { outline: 3px solid #f59e0b; outline-offset: 2px; }",
    ".vpw-launcher svg { width: 26px; height: 26px; fill: currentColor; }",
    ".vpw-launcher.vpw-live { background: #b91c1c; }",
    ".vpw-panel { width: 320px; max-width: calc(100vw - 40px); height: 420px; max-height: calc(100vh - 110px);",
    "  margin-bottom: 12px; background: #fff; border-radius: 14px; box-shadow: 0 8px 30px rgba(0,0,0,.25);",
    "  display: flex; flex-direction: column; overflow: hidden; }",
    ".vpw-panel[hidden] { display: none; }",
    ".vpw-header { background: var(--vpw-accent, #0f766e); color: var(--vpw-on-accent, #fff); padding: 10px 14px; display: flex; align-items: center; gap: 8px; }",
    ".vpw-title { font-weight: 600; flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }",
    ".vpw-x { background: transparent; border: 0; color: var(--vpw-on-accent, #fff); font-size: 20px; cursor: pointer; line-height: 1; }",
    ".vpw-status { padding: 6px 14px; font-size: 12px; color: #475569; border-bottom: 1px solid #e2e8f0;",
    "  display: flex; align-items: center; gap: 6px; }",
    ".vpw-dot { width: 8px; height: 8px; border-radius: 50%; background: #94a3b8; flex: none; }",
    ".vpw-status[data-status=listening] .vpw-dot { background: #16a34a; }",
    ".vpw-status[data-status=speaking] .vpw-dot { background: #2563eb; }",
    ".vpw-status[data-status=muted] .vpw-dot { background: #f59e0b; }",
    ".vpw-status[data-status=error] .vpw-dot { background: #dc2626; }",
    ".vpw-transcript { flex: 1; overflow-y: auto; padding: 10px 12px; display: flex; flex-direction: column; gap: 6px; }",
    ".vpw-line { max-width: 85%; padding: 6px 10px; border-radius: 12px; white-space: pre-wrap; word-wrap: break-word; }",
    ".vpw-note { align-self: center; font-size: 11px; color: #667085; }",
    ".vpw-user { align-self: flex-end; background: var(--vpw-accent, #0f766e); color: var(--vpw-on-accent, #fff); border-bottom-right-radius: 4px; }",
    ".vpw-assistant { align-self: flex-start; background: #f1f5f9; border-bottom-left-radius: 4px; }",
    ".vpw-interrupted::after { content: ' …'; }",
    ".vpw-empty { color: #94a3b8; text-align: center; margin: auto 0; font-size: 13px; }",
    ".vpw-alert { margin: 0 12px 8px; padding: 8px 10px; border-radius: 8px; background: #fef2f2; color: #991b1b;",
    "  font-size: 13px; display: flex; gap: 8px; align-items: center; }",
    ".vpw-alert[hidden] { display: none; }",
    ".vpw-alert.vpw-info { background: #f1f5f9; color: #334155; }",
    ".vpw-alert-text { flex: 1; }",
    ".vpw-controls { display: flex; gap: 8px; padding: 10px 12px; border-top: 1px solid #e2e8f0; }",
    ".vpw-btn { flex: 1; border: 1px solid #cbd5e1; background: #fff; color: #1d2430; border-radius: 8px;",
    "  padding: 7px 8px; cursor: pointer; font: inherit; }",
    ".vpw-btn:disabled { opacity: .5; cursor: default; }",
    ".vpw-btn[aria-pressed=true] { background: #fef3c7; border-color: #f59e0b; }",
    ".vpw-end { background: #b91c1c; border-color: #b91c1c; color: #fff; }",
    ".vpw-retry { flex: none; background: #991b1b; border-color: #991b1b; color: #fff; }",
    ".vpw-info .vpw-retry { background: var(--vpw-accent, #0f766e); border-color: var(--vpw-accent, #0f766e); color: var(--vpw-on-accent, #fff); }",
    ".vpw-file { display: none; }",
    ".vpw-consent { margin: 0 12px 8px; padding: 8px 10px; border-radius: 8px; background: #fffbeb; color: #78350f;",
    "  font-size: 13px; display: flex; flex-direction: column; gap: 6px; }",
    ".vpw-consent[hidden] { display: none; }",
    ".vpw-consent .vpw-btn { flex: none; background: var(--vpw-accent, #0f766e); border-color: var(--vpw-accent, #0f766e);",
    "  color: var(--vpw-on-accent, #fff); }",
  ].join("\n");

  var MIC_ICON =
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11h-2z"/></svg>';
  var CLOSE_ICON =
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M18.3 5.7 12 12l6.3 6.3-1.4 1.4L10.6 13.4 4.3 19.7 2.9 18.3 9.2 12 2.9 5.7 4.3 4.3l6.3 6.3 6.3-6.3z"/></svg>';

  // --- the widget ----------------------------------------------------------------------------

  function Widget(options) {
    this.baseUrl = (options.baseUrl || "").replace(/\/+$/, "");
    this.key = options.key || "";
    this.tokenUrl = options.tokenUrl || "";
    this.csrfToken = options.csrfToken || "";
    this.agentId = options.agent ? parseInt(options.agent, 10) || null : null;
    this.variables = options.variables || {};
    this.customTitle = options.title || "";
    this.lang = "en";
    this.preview = !!options.preview;
    this.appearance = null;
    this.state = {
      status: "idle",
      statusText: "",
      open: false,
      connected: false,
      muted: false,
      agent: null,
      sampleRate: 0,
      transcript: [],
      audioChunksReceived: 0,
      audioChunksPlayed: 0,
      samplesPlayed: 0,
      framesSent: 0,
      items: {},
      responseActive: false,
      lastTruncate: null,
      truncated: null,
      lastCancel: null,
      droppedDeltas: 0,
      bargeIns: 0,
      errors: [],
      serverErrors: [],
      continuations: [],
      closeCode: null,
      reconnects: 0,
      appearance: null,
    };
    this.restarts = 0; // reconnect attempts since the last session.created
    this.run = 0; // increases with every start/stop, so late callbacks of an old run are ignored
    this.lines = {};
    this.interrupted = {};
    this.flushSeq = 0;
    this.postedTotal = 0;
    this.playerTotal = 0;
    this.playedBase = 0;
    this.chunksBase = 0;
    this.resamplers = {};
    this.mount(options.container);
    if (this.preview) {
      // Sample lines, so the preview shows the accent on a user's line too.
      this.emptyNode.hidden = true;
      this.transcriptNode.appendChild(el("div", "vpw-line vpw-user", "\u2026"));
      this.transcriptNode.appendChild(el("div", "vpw-line vpw-assistant", "\u2026"));
    }
    if (options.appearance) this.applyAppearance(options.appearance);
    else if (this.key && !this.tokenUrl && !this.preview) this.loadAppearance();
  }

  // The widget's words in the key's language (English when a word is not translated).
  Widget.prototype.t = function (name) {
    var table = TRANSLATIONS[this.lang] || {};
    return table[name] || UI[name] || MESSAGES[name] || "";
  };

  // The look the console set on the widget key: read once when the widget mounts, so the embed
  // snippet stays one tag. Until it answers (or if it fails) the default look stays.
  Widget.prototype.loadAppearance = function () {
    var self = this;
    return fetch(this.baseUrl + "/widget/appearance?key=" + encodeURIComponent(this.key), {
      mode: "cors",
      credentials: "omit",
    })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (data) {
        if (data && data.appearance) self.applyAppearance(data.appearance);
      })
      .catch(function () {});
  };

  Widget.prototype.applyAppearance = function (appearance) {
    var a = appearance || {};
    var clean = {
      accent_colour: COLOUR.test(a.accent_colour || "") ? a.accent_colour : "#0f766e",
      text_colour: COLOUR.test(a.text_colour || "") ? a.text_colour : "#ffffff",
      position: POSITIONS[a.position] ? a.position : "bottom-right",
      button_text: typeof a.button_text === "string" ? a.button_text.slice(0, 24) : "",
      language: TRANSLATIONS[a.language] ? a.language : "en",
    };
    this.state.appearance = clean;
    this.lang = clean.language;
    this.root.style.setProperty("--vpw-accent", clean.accent_colour);
    this.root.style.setProperty("--vpw-on-accent", clean.text_colour);
    this.root.className = "vpw-root vpw-pos-" + clean.position + (this.preview ? " vpw-contained" : "");
    this.relabel();
  };

  // Put the current language's words on everything already drawn.
  Widget.prototype.relabel = function () {
    if (!this.customTitle && !(this.state.agent && this.state.agent.name)) {
      this.titleNode.textContent = this.t("title");
    }
    this.panel.setAttribute("aria-label", this.t("title"));
    this.closeX.setAttribute("aria-label", this.t("close_label"));
    this.emptyNode.textContent = this.t("empty");
    this.consentButton.textContent = this.t("agree");
    this.muteButton.textContent = this.t(this.state.muted ? "unmute" : "mute");
    this.pictureButton.textContent = this.t("picture");
    this.pictureButton.title = this.t("picture_title");
    this.endButton.textContent = this.t("end");
    this.renderLauncher();
  };

  Widget.prototype.renderLauncher = function () {
    var open = this.state.open;
    var text = (!open && this.state.appearance && this.state.appearance.button_text) || "";
    this.launcher.innerHTML = open ? CLOSE_ICON : MIC_ICON;
    this.launcher.classList.toggle("vpw-labelled", !!text);
    if (text) this.launcher.appendChild(el("span", "vpw-launcher-text", text));
    this.launcher.setAttribute("aria-label", open ? this.t("close_panel_label") : text || this.t("open_label"));
  };

  Widget.prototype.mount = function (container) {
    var host = document.createElement("div");
    host.setAttribute("data-voiceplatform-widget", "");
    (container || document.body).appendChild(host);
    var shadow = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
    var style = el("style");
    style.textContent = CSS;
    shadow.appendChild(style);

    var root = el("div", "vpw-root");
    var panel = el("div", "vpw-panel");
    panel.hidden = true;
    panel.setAttribute("role", "dialog");
    panel.setAttribute("aria-label", UI.title);

    var header = el("div", "vpw-header");
    this.titleNode = el("div", "vpw-title", this.customTitle || UI.title);
    var x = el("button", "vpw-x", "\u00d7");
    x.type = "button";
    x.setAttribute("aria-label", UI.close_label);
    this.closeX = x;
    header.appendChild(this.titleNode);
    header.appendChild(x);

    this.statusNode = el("div", "vpw-status");
    this.statusNode.setAttribute("role", "status");
    this.statusNode.setAttribute("aria-live", "polite");
    this.statusNode.appendChild(el("span", "vpw-dot"));
    this.statusTextNode = el("span", "vpw-status-text", "");
    this.statusNode.appendChild(this.statusTextNode);

    this.transcriptNode = el("div", "vpw-transcript");
    this.transcriptNode.setAttribute("aria-live", "polite");
    this.emptyNode = el("div", "vpw-empty", UI.empty);
    this.transcriptNode.appendChild(this.emptyNode);

    this.alertNode = el("div", "vpw-alert");
    this.alertNode.hidden = true;
    this.alertNode.setAttribute("role", "alert");
    this.alertTextNode = el("span", "vpw-alert-text");
    this.retryButton = el("button", "vpw-btn vpw-retry", UI.reconnect);
    this.retryButton.type = "button";
    this.alertNode.appendChild(this.alertTextNode);
    this.alertNode.appendChild(this.retryButton);

    // The recording notice: shown before the microphone starts when the agent records.
    this.consentNode = el("div", "vpw-consent");
    this.consentNode.hidden = true;
    this.consentNode.setAttribute("role", "alertdialog");
    this.consentTextNode = el("span", "vpw-consent-text");
    this.consentButton = el("button", "vpw-btn vpw-consent-agree", UI.agree);
    this.consentButton.type = "button";
    this.consentNode.appendChild(this.consentTextNode);
    this.consentNode.appendChild(this.consentButton);

    var controls = el("div", "vpw-controls");
    this.muteButton = el("button", "vpw-btn vpw-mute", UI.mute);
    this.muteButton.type = "button";
    this.muteButton.setAttribute("aria-pressed", "false");
    this.pictureButton = el("button", "vpw-btn vpw-picture", UI.picture);
    this.pictureButton.type = "button";
    this.pictureButton.title = UI.picture_title;
    this.fileInput = el("input", "vpw-file");
    this.fileInput.type = "file";
    this.fileInput.accept = "image/*";
    this.endButton = el("button", "vpw-btn vpw-end", UI.end);
    this.endButton.type = "button";
    controls.appendChild(this.muteButton);
    controls.appendChild(this.pictureButton);
    controls.appendChild(this.endButton);
    controls.appendChild(this.fileInput);

    panel.appendChild(header);
    panel.appendChild(this.statusNode);
    panel.appendChild(this.transcriptNode);
    panel.appendChild(this.alertNode);
    panel.appendChild(this.consentNode);
    panel.appendChild(controls);

    this.launcher = el("button", "vpw-launcher");
    this.launcher.type = "button";

    root.appendChild(panel);
    root.appendChild(this.launcher);
    shadow.appendChild(root);
    this.host = host;
    this.panel = panel;
    this.root = root;
    this.panelTitle = panel;
    this.renderLauncher();

    var self = this;
    this.launcher.addEventListener("click", function () {
      if (self.state.open) self.close();
      else self.open();
    });
    x.addEventListener("click", function () {
      self.close();
    });
    this.endButton.addEventListener("click", function () {
      self.stop("user");
    });
    this.muteButton.addEventListener("click", function () {
      self.setMuted(!self.state.muted);
    });
    this.retryButton.addEventListener("click", function () {
      self.start();
    });
    this.pictureButton.addEventListener("click", function () {
      self.fileInput.click();
    });
    this.fileInput.addEventListener("change", function () {
      var file = self.fileInput.files && self.fileInput.files[0];
      self.fileInput.value = "";
      if (file) self.sendPicture(file);
    });
    this.updateControls();
  };

  // --- public actions ------------------------------------------------------------------------

  Widget.prototype.open = function () {
    this.state.open = true;
    this.panel.hidden = false;
    this.renderLauncher();
    if (this.preview) return; // the console's preview: a look, never a conversation
    // Opening again after an end starts a new conversation; an error stays shown (with its
    // retry button, when a retry can help).
    if (this.state.status === "idle" || this.state.status === "ended") this.start();
  };

  Widget.prototype.close = function () {
    if (this.state.status !== "idle" && this.state.status !== "ended" && this.state.status !== "error") {
      this.stop("user");
    }
    this.state.open = false;
    this.panel.hidden = true;
    this.renderLauncher();
  };

  Widget.prototype.setMuted = function (muted) {
    this.state.muted = !!muted;
    this.muteButton.textContent = this.t(muted ? "unmute" : "mute");
    this.muteButton.setAttribute("aria-pressed", muted ? "true" : "false");
    if (this.capture) this.capture.port.postMessage({ type: "enabled", value: !muted });
    this.refreshStatus();
  };

  // Start (or restart) a conversation: a new token, a new socket. Must be called from a user
  // gesture (click) in browsers that gate audio on one: the AudioContext is made synchronously.
  Widget.prototype.start = function () {
    var self = this;
    this.teardown();
    var run = ++this.run;
    this.hideAlert();
    this.state.errors = [];
    this.state.closeCode = null;
    this.setStatus("connecting", this.t("connecting"));
    var AudioContextClass = window.AudioContext || window.webkitAudioContext;
    if (!AudioContextClass || !window.AudioWorkletNode || !window.WebSocket || !navigator.mediaDevices) {
      this.fail("audio_unsupported");
      return Promise.resolve();
    }
    try {
      // No sampleRate option: Firefox refuses to connect a microphone at another rate.
      this.context = new AudioContextClass({ latencyHint: "interactive" });
    } catch (error) {
      this.fail("audio_unsupported");
      return Promise.resolve();
    }
    this.context.resume().catch(function () {});
    this.state.sampleRate = this.context.sampleRate;
    var tokenAt = 0;
    return this.requestToken()
      .then(function (session) {
        if (run !== self.run) return null;
        tokenAt = Date.now();
        self.session = session;
        self.state.agent = session.agent;
        if (session.appearance) self.applyAppearance(session.appearance);
        if (session.agent && session.agent.name) self.titleNode.textContent = session.agent.name;
        return self.askConsent(session.agent || {}, run);
      })
      .then(function (agreed) {
        if (run !== self.run || !agreed) return false;
        return self.startAudio(self.session.agent || {});
      })
      .then(function (ready) {
        if (run !== self.run || !ready) return null;
        // A slow permission prompt may have outlived the token: ask for a fresh one.
        if (Date.now() - tokenAt > TOKEN_REUSE_LIMIT_MS) {
          return self.requestToken().then(function (session) {
            self.session = session;
            return run === self.run ? session : null;
          });
        }
        return self.session;
      })
      .then(function (session) {
        if (run !== self.run || !session) return;
        self.connect(session, run);
      })
      .catch(function (error) {
        if (run !== self.run) return;
        if (!error || !error.vpwCode) console.warn("VoicePlatformWidget:", error);
        self.fail((error && error.vpwCode) || "unavailable", error && error.vpwMessage);
      });
  };

  // End the conversation. reason "user": the end button (a normal end).
  Widget.prototype.stop = function (reason) {
    this.teardown();
    this.run++;
    if (reason === "user") {
      this.setStatus("ended", this.t("ended"));
      this.showAlert(this.t("ended"), this.t("start_again"), true);
    }
  };

  // --- token, microphone, socket -------------------------------------------------------------

  Widget.prototype.requestToken = function () {
    var body = { key: this.key };
    if (this.agentId) body.agent = this.agentId;
    if (Object.keys(this.variables).length) body.variables = this.variables;
    var request = this.tokenUrl
      ? fetch(this.tokenUrl, {
          method: "POST",
          credentials: "same-origin",
          headers: { "X-CSRFToken": this.csrfToken, "Content-Type": "application/json" },
          body: JSON.stringify({ variables: consoleVariables() }),
        })
      : fetch(this.baseUrl + "/widget/session", {
          method: "POST",
          mode: "cors",
          credentials: "omit",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(body),
        });
    return request
      .catch(function () {
        throw { vpwCode: "unavailable" };
      })
      .then(function (response) {
        return response
          .json()
          .catch(function () {
            return null;
          })
          .then(function (data) {
            if (response.ok && data && data.token) return data;
            var code = data && data.error && data.error.code;
            if (!code || !MESSAGES[code]) {
              code = { 402: "budget_exhausted", 429: "too_many_sessions", 404: "agent_not_found" }[response.status] || "unavailable";
            }
            throw { vpwCode: code };
          });
      });
  };

  // A recorded conversation starts only once the user has seen the notice and clicked "Agree
  // and start" (a click, not a timeout: consent to a recording is the user's act, and nothing
  // is captured before it). Asked once per page: a reconnect of the same visit does not ask
  // again.
  Widget.prototype.askConsent = function (agent, run) {
    var self = this;
    var recording = agent.recording || {};
    if (!recording.enabled || this.state.recordingConsented) return Promise.resolve(true);
    this.consentTextNode.textContent = recording.notice || this.t("recorded");
    this.consentNode.hidden = false;
    this.setStatus("consent", this.t("recorded_status"));
    return new Promise(function (resolve) {
      self.resolveConsent = function (agreed) {
        self.resolveConsent = null;
        self.consentNode.hidden = true;
        resolve(agreed && run === self.run);
      };
      self.consentButton.onclick = function () {
        self.state.recordingConsented = true;
        if (self.resolveConsent) self.resolveConsent(true);
      };
      self.consentButton.focus();
    });
  };

  Widget.prototype.startAudio = function (agent) {
    var self = this;
    var context = this.context;
    var input = formatInfo(agent.input_audio_format);
    this.outputFormat = formatInfo(agent.output_audio_format);
    var moduleUrl = URL.createObjectURL(new Blob([WORKLET_SOURCE], { type: "application/javascript" }));
    var micPromise = navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 },
    });
    var workletPromise = context.audioWorklet.addModule(moduleUrl);
    return Promise.all([micPromise, workletPromise]).then(
      function (results) {
        URL.revokeObjectURL(moduleUrl);
        if (self.context !== context) {
          results[0].getTracks().forEach(function (track) {
            track.stop();
          });
          return false;
        }
        self.stream = results[0];
        self.source = context.createMediaStreamSource(self.stream);
        self.capture = new AudioWorkletNode(context, "vpw-capture", {
          numberOfInputs: 1,
          numberOfOutputs: 1,
          outputChannelCount: [1],
          processorOptions: { outRate: input.rate, encoding: input.encoding, frameMs: FRAME_MS },
        });
        self.capture.port.onmessage = function (event) {
          self.onCaptureFrame(event.data);
        };
        self.capture.port.postMessage({ type: "enabled", value: !self.state.muted });
        self.source.connect(self.capture);
        // The capture node outputs silence; connecting it keeps it pulled by the graph.
        self.capture.connect(context.destination);
        self.player = new AudioWorkletNode(context, "vpw-player", {
          numberOfInputs: 0,
          numberOfOutputs: 1,
          outputChannelCount: [1],
        });
        // A new player counts from zero; the state's totals go on across reconnects.
        self.playedBase = self.state.samplesPlayed;
        self.chunksBase = self.state.audioChunksPlayed;
        self.playerTotal = 0;
        self.postedTotal = 0;
        self.player.port.onmessage = function (event) {
          self.onPlayerMessage(event.data);
        };
        self.player.connect(context.destination);
        return true;
      },
      function (error) {
        URL.revokeObjectURL(moduleUrl);
        var name = error && error.name;
        if (name === "NotAllowedError" || name === "SecurityError") throw { vpwCode: "microphone_denied" };
        if (name === "NotFoundError" || name === "OverconstrainedError") throw { vpwCode: "microphone_missing" };
        if (name === "NotReadableError" || name === "AbortError") throw { vpwCode: "microphone_unavailable" };
        throw { vpwCode: "audio_unsupported" };
      }
    );
  };

  Widget.prototype.connect = function (session, run) {
    var self = this;
    var url = this.baseUrl.replace(/^http/, "ws") + (session.socket_path || "/ws/widget/");
    var socket;
    try {
      // A widget token travels as "vp-token.<token>"; a console or backend-minted key as
      // "openai-insecure-api-key.<key>", as OpenAI's browser clients send theirs.
      var prefix = (session.subprotocol || "vp-token") + ".";
      socket = new WebSocket(url, ["realtime", prefix + session.token]);
    } catch (error) {
      this.fail("unavailable");
      return;
    }
    this.socket = socket;
    this.lastErrorCode = null;
    socket.onopen = function () {
      if (run !== self.run) return;
      self.state.connected = true;
    };
    socket.onmessage = function (message) {
      if (run !== self.run || typeof message.data !== "string") return;
      var event;
      try {
        event = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      self.onServerEvent(event);
    };
    socket.onclose = function (event) {
      if (run !== self.run) return;
      self.onSocketClosed(event.code, event.reason);
    };
  };

  Widget.prototype.onCaptureFrame = function (buffer) {
    var socket = this.socket;
    if (this.state.muted || !socket || socket.readyState !== 1 || !this.ready) return;
    // Exactly this shape and key order: the platform recognises it without a JSON decode.
    // Translation agents speak the translation protocol (session.input_audio_buffer.append).
    var appendType = this.state.agent && this.state.agent.kind === "translation"
      ? "session.input_audio_buffer.append"
      : "input_audio_buffer.append";
    socket.send('{"type":"' + appendType + '","audio":"' + bytesToBase64(new Uint8Array(buffer)) + '"}');
    this.state.framesSent++;
  };

  Widget.prototype.send = function (event) {
    if (this.socket && this.socket.readyState === 1) {
      this.socket.send(JSON.stringify(event));
      return true;
    }
    return false;
  };

  Widget.prototype.onSocketClosed = function (code, reason) {
    this.state.closeCode = code;
    this.state.closeReason = reason || "";
    var codeName = this.lastErrorCode;
    var restarting = RESTART_CLOSE_CODES[code] || codeName === "server_restarting";
    // A reconnect that found no server (the whole fleet restarting) tries again too.
    var retrying = this.restarts > 0 && !this.ready && code === 1006;
    if ((restarting || retrying) && this.restarts < RESTART_ATTEMPTS && this.context) {
      this.reconnect();
      return;
    }
    this.restarts = 0;
    this.teardown();
    this.run++;
    if (code === 1000 || code === 1005) {
      if (codeName === "session_max_duration") {
        this.finish("session_max_duration");
      } else if (reason === "call_ended" || reason === "call_transferred") {
        this.finish(reason); // the agent hung up (its end_call tool): a normal end
      } else {
        this.setStatus("ended", this.t("ended"));
        this.showAlert(this.t("has_ended"), this.t("start_again"), true);
      }
      return;
    }
    if (code === 4000) {
      this.finish("session_ended");
      return;
    }
    var name = codeName && MESSAGES[codeName] ? codeName : CLOSE_CODES[code] || "connection_lost";
    if (code === 1011 || code === 1006 || code === 1013 || code === 1001) {
      name = code === 1013 ? "upstream_unavailable" : "connection_lost";
    }
    this.fail(name);
  };

  // The server is restarting: only the socket is replaced (a fresh token, a new socket that the
  // load balancer sends to a server still up); the microphone and the audio graph stay, so no
  // new user gesture is needed. The conversation goes on in a new realtime session.
  Widget.prototype.reconnect = function () {
    var self = this;
    var socket = this.socket;
    if (socket) socket.onopen = socket.onmessage = socket.onclose = null;
    this.socket = null;
    this.ready = false;
    this.state.connected = false;
    this.state.responseActive = false;
    this.restarts += 1;
    this.state.reconnects += 1;
    var run = ++this.run;
    var delay = Math.min(RESTART_MAX_DELAY_MS, RESTART_FIRST_DELAY_MS * Math.pow(2, this.restarts - 1));
    this.setStatus("connecting", this.t("reconnecting"));
    setTimeout(function () {
      if (run !== self.run) return;
      self
        .requestToken()
        .then(function (session) {
          if (run !== self.run) return;
          self.session = session;
          self.connect(session, run);
        })
        .catch(function (error) {
          if (run !== self.run) return;
          if (self.restarts < RESTART_ATTEMPTS) {
            self.reconnect();
          } else {
            self.restarts = 0;
            self.fail((error && error.vpwCode) || "unavailable");
          }
        });
    }, delay / 2 + (Math.random() * delay) / 2);
  };

  // A session that ended on the server's side, normally (not an error).
  Widget.prototype.finish = function (code) {
    this.state.errors.push(code);
    this.setStatus("ended", this.t(code));
    this.showAlert(this.t(code), this.t("start_again"), true);
  };

  Widget.prototype.fail = function (code, detail) {
    this.teardown();
    this.state.errors.push(code);
    var text = MESSAGES[code] ? this.t(code) : this.t("unavailable");
    this.setStatus("error", text);
    var retry = FINAL[code] ? null : this.t(code === "microphone_denied" ? "try_again" : "reconnect");
    this.showAlert(text, retry, false);
    void detail;
  };

  // Release the microphone, the socket and the audio graph (the transcript stays).
  Widget.prototype.teardown = function () {
    if (this.resolveConsent) this.resolveConsent(false);
    var socket = this.socket;
    this.socket = null;
    this.ready = false;
    this.state.connected = false;
    this.state.responseActive = false;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      if (socket.readyState <= 1) {
        try {
          socket.close(1000, "client closed");
        } catch (error) {
          /* already closing */
        }
      }
    }
    if (this.stream) {
      this.stream.getTracks().forEach(function (track) {
        track.stop();
      });
      this.stream = null;
    }
    [this.source, this.capture, this.player].forEach(function (node) {
      if (node) {
        try {
          node.disconnect();
        } catch (error) {
          /* not connected */
        }
      }
    });
    this.source = this.capture = this.player = null;
    if (this.context) {
      var context = this.context;
      this.context = null;
      context.close().catch(function () {});
    }
    this.playing = false;
    this.currentResponse = null;
    this.resamplers = {};
    this.postedTotal = 0;
    this.playerTotal = 0;
    this.updateControls();
  };

  // --- server events -------------------------------------------------------------------------

  Widget.prototype.onServerEvent = function (event) {
    var type = event.type;
    if (type === "response.output_audio.delta" || type === "response.audio.delta") {
      this.onAudioDelta(event);
      return;
    }
    switch (type) {
      case "session.created":
      case "session.updated":
        if (!this.ready) {
          this.ready = true;
          this.restarts = 0;
          this.state.connected = true;
          this.refreshStatus();
          this.updateControls();
        }
        break;
      case "input_audio_buffer.speech_started":
        this.onSpeechStarted(event);
        break;
      case "input_audio_buffer.committed":
        this.userLine(event.item_id);
        break;
      case "conversation.item.input_audio_transcription.delta":
        this.userLine(event.item_id).text += event.delta || "";
        this.renderLine(event.item_id);
        break;
      case "conversation.item.input_audio_transcription.completed":
        var line = this.userLine(event.item_id);
        line.text = (event.transcript || "").trim();
        if (!line.text) this.removeLine(event.item_id);
        else this.renderLine(event.item_id);
        break;
      case "response.created":
        this.currentResponse = event.response && event.response.id;
        this.state.responseActive = true;
        break;
      case "response.done":
        if (!event.response || event.response.id === this.currentResponse) {
          this.currentResponse = null;
          this.state.responseActive = false;
        }
        this.followUpToolCalls();
        break;
      case "response.output_audio_transcript.delta":
      case "response.audio_transcript.delta":
      case "response.output_text.delta":
      case "response.text.delta":
        if (this.interrupted[event.response_id]) break;
        this.assistantLine(event.item_id).text += event.delta || "";
        this.renderLine(event.item_id);
        break;
      case "response.output_audio_transcript.done":
      case "response.audio_transcript.done":
      case "response.output_text.done":
      case "response.text.done":
        if (this.interrupted[event.response_id]) break;
        this.assistantLine(event.item_id).text = event.transcript || event.text || "";
        this.renderLine(event.item_id);
        break;
      case "conversation.item.truncated":
        this.state.truncated = { item_id: event.item_id, audio_end_ms: event.audio_end_ms };
        break;
      // Translation sessions: source captions on the user's side, the translation on the other.
      case "session.input_transcript.delta":
        if (this.translationHasOutput) {
          this.translationTurn = (this.translationTurn || 0) + 1;
          this.translationHasOutput = false;
        }
        this.userLine("source-" + (this.translationTurn || 0)).text += event.delta || "";
        this.renderLine("source-" + (this.translationTurn || 0));
        break;
      case "session.output_transcript.delta":
        this.translationHasOutput = true;
        this.assistantLine("target-" + (this.translationTurn || 0)).text += event.delta || "";
        this.renderLine("target-" + (this.translationTurn || 0));
        break;
      case "session.output_audio.delta":
        this.onAudioDelta({
          delta: event.delta,
          item_id: "target-" + (this.translationTurn || 0),
          response_id: "translation-" + (this.translationTurn || 0),
        });
        break;
      case "response.output_item.done":
        // A client-side tool: run the page's handler and return its result. Calls the platform
        // runs itself (webhooks) have no handler here and are left alone.
        var call = event.item;
        if (call && call.type === "function_call" && toolHandlers[call.name]) {
          this.runClientTool(call);
        }
        break;
      case "vp.session.continued":
        // The platform moved the conversation to a fresh voice session; it goes on.
        this.state.continuations.push(event.reason || "");
        var note = el("div", "vpw-note");
        note.textContent = this.t("continued");
        this.transcriptNode.appendChild(note);
        break;
      case "error":
        this.onErrorEvent(event.error || {});
        break;
      default:
        break;
    }
  };

  // As with OpenAI: once every client-side call is answered and no response is running, the
  // client asks for the next response (the platform adds none of its own for these calls).
  Widget.prototype.followUpToolCalls = function () {
    if (!this.toolFollowUpWanted || this.pendingToolCalls || this.state.responseActive) return;
    this.toolFollowUpWanted = false;
    this.send({ type: "response.create" });
  };

  Widget.prototype.runClientTool = function (call) {
    var self = this;
    this.pendingToolCalls = (this.pendingToolCalls || 0) + 1;
    var args = {};
    try {
      args = call.arguments ? JSON.parse(call.arguments) : {};
    } catch (error) {
      args = {};
    }
    Promise.resolve()
      .then(function () {
        return toolHandlers[call.name](args);
      })
      .then(
        function (result) {
          return typeof result === "string" ? result : JSON.stringify(result === undefined ? null : result);
        },
        function (error) {
          return JSON.stringify({ error: { type: "client_error", message: String((error && error.message) || error) } });
        }
      )
      .then(function (output) {
        self.send({
          type: "conversation.item.create",
          item: { type: "function_call_output", call_id: call.call_id, output: output },
        });
        self.pendingToolCalls -= 1;
        self.toolFollowUpWanted = true;
        self.followUpToolCalls();
      });
  };

  Widget.prototype.onErrorEvent = function (error) {
    var code = error.code || error.type || "server_error";
    this.state.serverErrors.push(code);
    this.lastErrorCode = code;
    // Refusals and endings are followed by a close; the close handler shows the message.
  };

  Widget.prototype.onAudioDelta = function (event) {
    if (this.interrupted[event.response_id]) {
      this.state.droppedDeltas++;
      return;
    }
    if (!this.player || !event.delta) return;
    var format = this.outputFormat || formatInfo("audio/pcm");
    var bytes = base64ToBytes(event.delta);
    var item = this.state.items[event.item_id];
    if (!item) {
      item = this.state.items[event.item_id] = {
        responseId: event.response_id,
        receivedMs: 0,
        postedSamples: 0,
        playedSamples: 0,
      };
    }
    item.receivedMs += (bytes.length / format.bytesPerSample / format.rate) * 1000;
    var resampler = this.resamplers[event.item_id];
    if (!resampler) {
      resampler = this.resamplers[event.item_id] = new VpwLinearResampler(format.rate, this.context.sampleRate);
    }
    var samples = resampler.process(decodeAudio(bytes, format.encoding));
    item.postedSamples += samples.length;
    this.postedTotal += samples.length;
    this.state.audioChunksReceived++;
    this.player.port.postMessage({ type: "push", item: event.item_id, samples: samples }, [samples.buffer]);
    this.lastAudioItem = event.item_id;
    if (!this.playing) {
      this.playing = true;
      this.refreshStatus();
    }
  };

  Widget.prototype.onPlayerMessage = function (message) {
    var state = this.state;
    var items = message.items || {};
    for (var id in items) {
      if (Object.prototype.hasOwnProperty.call(items, id) && state.items[id]) state.items[id].playedSamples = items[id];
    }
    this.playerTotal = message.total;
    state.samplesPlayed = this.playedBase + message.total;
    state.audioChunksPlayed = this.chunksBase + message.chunks;
    if (message.type === "flushed") {
      this.onFlushed(message);
      return;
    }
    var playing = message.queued > 0 || this.postedTotal > message.total;
    if (playing !== this.playing) {
      this.playing = playing;
      this.refreshStatus();
    }
  };

  // Barge-in: the user speaks while the assistant's audio plays or waits in the queue.
  Widget.prototype.onSpeechStarted = function () {
    if (!this.player || !(this.playing || this.postedTotal > this.playerTotal)) return;
    var active = this.state.responseActive ? this.currentResponse : null;
    // Every response with audio not yet played: its late deltas must not be heard.
    var items = this.state.items;
    for (var id in items) {
      if (Object.prototype.hasOwnProperty.call(items, id) && items[id].postedSamples > items[id].playedSamples) {
        this.interrupted[items[id].responseId] = true;
      }
    }
    if (active) {
      this.interrupted[active] = true;
      this.send({ type: "response.cancel", response_id: active });
      this.state.lastCancel = active;
    }
    this.state.bargeIns++;
    this.player.port.postMessage({ type: "flush", seq: ++this.flushSeq });
    this.postedTotal = this.playerTotal; // corrected by the flush answer
    this.playing = false;
    this.refreshStatus();
  };

  Widget.prototype.onFlushed = function (message) {
    this.postedTotal = message.total;
    var item = message.item && this.state.items[message.item];
    if (item) {
      this.interrupted[item.responseId] = true;
      // Milliseconds of this item the user actually heard, never more than we received.
      var heardMs = Math.floor((message.itemPlayed * 1000) / this.state.sampleRate);
      heardMs = Math.min(heardMs, Math.floor(item.receivedMs));
      this.send({ type: "conversation.item.truncate", item_id: message.item, content_index: 0, audio_end_ms: heardMs });
      this.state.lastTruncate = {
        item_id: message.item,
        response_id: item.responseId,
        audio_end_ms: heardMs,
        played_samples: message.itemPlayed,
        sample_rate: this.state.sampleRate,
        received_ms: item.receivedMs,
        dropped_samples: message.droppedSamples,
      };
      var line = this.lines[message.item];
      if (line && line.node) line.node.classList.add("vpw-interrupted");
    }
    this.playing = false;
    this.refreshStatus();
  };

  // --- picture -------------------------------------------------------------------------------

  Widget.prototype.sendPicture = function (file) {
    var self = this;
    if (!this.ready || !/^image\//.test(file.type)) return;
    var url = URL.createObjectURL(file);
    var image = new Image();
    image.onload = function () {
      var scale = Math.min(1, 1024 / Math.max(image.naturalWidth, image.naturalHeight));
      var canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(image.naturalWidth * scale));
      canvas.height = Math.max(1, Math.round(image.naturalHeight * scale));
      canvas.getContext("2d").drawImage(image, 0, 0, canvas.width, canvas.height);
      URL.revokeObjectURL(url);
      var dataUrl = canvas.toDataURL("image/jpeg", 0.8);
      var item = { type: "message", role: "user", content: [{ type: "input_image", image_url: dataUrl }] };
      if (self.send({ type: "conversation.item.create", item: item })) {
        var id = "local-picture-" + Date.now();
        self.userLine(id).text = "[picture]";
        self.renderLine(id);
        if (!self.state.responseActive) self.send({ type: "response.create" });
      }
    };
    image.onerror = function () {
      URL.revokeObjectURL(url);
    };
    image.src = url;
  };

  // --- transcript and status -----------------------------------------------------------------

  Widget.prototype.line = function (id, role) {
    var line = this.lines[id];
    if (!line) {
      line = this.lines[id] = { role: role, text: "", node: null, entry: { role: role, text: "" } };
      this.state.transcript.push(line.entry);
    }
    return line;
  };

  Widget.prototype.userLine = function (id) {
    return this.line(id || "user-" + this.state.transcript.length, "user");
  };

  Widget.prototype.assistantLine = function (id) {
    return this.line(id || "assistant-" + this.state.transcript.length, "assistant");
  };

  Widget.prototype.renderLine = function (id) {
    var line = this.lines[id];
    if (!line) return;
    line.entry.text = line.text;
    if (!line.text) return;
    if (!line.node) {
      line.node = el("div", "vpw-line vpw-" + line.role);
      // Keep the conversation's order: insert before the first line created after this one.
      var index = this.state.transcript.indexOf(line.entry);
      var before = null;
      for (var i = index + 1; i < this.state.transcript.length && !before; i++) {
        var later = this.lineByEntry(this.state.transcript[i]);
        if (later && later.node) before = later.node;
      }
      this.transcriptNode.insertBefore(line.node, before);
      if (this.emptyNode.parentNode) this.emptyNode.parentNode.removeChild(this.emptyNode);
    }
    line.node.textContent = line.text;
    this.transcriptNode.scrollTop = this.transcriptNode.scrollHeight;
  };

  Widget.prototype.lineByEntry = function (entry) {
    for (var id in this.lines) {
      if (Object.prototype.hasOwnProperty.call(this.lines, id) && this.lines[id].entry === entry) return this.lines[id];
    }
    return null;
  };

  Widget.prototype.removeLine = function (id) {
    var line = this.lines[id];
    if (!line) return;
    if (line.node && line.node.parentNode) line.node.parentNode.removeChild(line.node);
    var index = this.state.transcript.indexOf(line.entry);
    if (index >= 0) this.state.transcript.splice(index, 1);
    delete this.lines[id];
  };

  Widget.prototype.setStatus = function (status, text) {
    this.state.status = status;
    this.state.statusText = text;
    this.statusNode.setAttribute("data-status", status);
    this.statusTextNode.textContent = text;
    this.launcher.classList.toggle("vpw-live", status === "listening" || status === "speaking" || status === "muted");
    this.updateControls();
  };

  Widget.prototype.refreshStatus = function () {
    if (!this.ready) return;
    if (this.playing) this.setStatus("speaking", this.t("speaking"));
    else if (this.state.muted) this.setStatus("muted", this.t("muted"));
    else this.setStatus("listening", this.t("listening"));
  };

  Widget.prototype.updateControls = function () {
    if (!this.muteButton) return;
    var live = !!this.ready;
    this.muteButton.disabled = !live;
    this.pictureButton.disabled = !live;
    this.endButton.disabled = !(live || this.state.status === "connecting" || this.state.status === "consent");
  };

  Widget.prototype.showAlert = function (text, action, informational) {
    this.alertTextNode.textContent = text;
    this.alertNode.classList.toggle("vpw-info", !!informational);
    this.retryButton.hidden = !action;
    this.retryButton.textContent = action || "";
    this.alertNode.hidden = false;
  };

  Widget.prototype.hideAlert = function () {
    this.alertNode.hidden = true;
  };

  // --- the global ----------------------------------------------------------------------------

  var instance = null;
  // Client-side tools the page provides: name → function(arguments) returning a result.
  var toolHandlers = {};

  function init(options) {
    if (instance) return api;
    options = options || {};
    var config = {
      baseUrl: options.baseUrl || (scriptConfig && scriptConfig.baseUrl) || window.location.origin,
      key: options.key || (scriptConfig && scriptConfig.key) || "",
      agent: options.agent || (scriptConfig && scriptConfig.agent) || "",
      tokenUrl: options.tokenUrl || (scriptConfig && scriptConfig.tokenUrl) || "",
      csrfToken: options.csrfToken || (scriptConfig && scriptConfig.csrfToken) || "",
      // VoicePlatformWidget.init({variables: {customer_name: "Ada"}}), or data-* attributes.
      variables: options.variables || (scriptConfig && scriptConfig.variables) || {},
      title: options.title,
      container: options.container,
      appearance: options.appearance,
      preview: options.preview,
    };
    instance = new Widget(config);
    return api;
  }

  var api = {
    __vpw: true,
    init: init,
    open: function () {
      if (!instance) init();
      instance.open();
    },
    close: function () {
      if (instance) instance.close();
    },
    // The console's live preview redraws the widget as the appearance form changes.
    setAppearance: function (appearance) {
      if (instance) instance.applyAppearance(appearance);
    },
    // Client-side tools: VoicePlatformWidget.registerTool("open_map", async (args) => ({...})).
    registerTool: function (name, handler) {
      toolHandlers[name] = handler;
    },
    // Feed a server event as if it came from the socket (tests: simulate speech_started).
    simulateServerEvent: function (event) {
      if (instance) instance.onServerEvent(event);
    },
  };
  Object.defineProperty(api, "state", {
    enumerable: true,
    get: function () {
      return instance ? instance.state : null;
    },
  });
  window.VoicePlatformWidget = api;

  if (scriptConfig && (scriptConfig.key || scriptConfig.tokenUrl) && scriptConfig.autoMount) {
    var mount = function () {
      init();
      if (scriptConfig.openAtStart) api.open();
    };
    if (document.body) mount();
    else document.addEventListener("DOMContentLoaded", mount);
  }
})();
