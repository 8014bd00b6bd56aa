// The session page's recording player and its transcript: clicking a line (or Enter on it)
// seeks to where it was said; while playing, the line being heard is highlighted. A file of its
// own: the console's Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  var player = document.getElementById("recording-player");
  var transcript = document.getElementById("transcript");
  if (!player || !transcript) return;
  var lines = Array.prototype.slice.call(transcript.querySelectorAll("li[data-offset-ms]"));
  lines.sort(function (a, b) {
    return Number(a.dataset.offsetMs) - Number(b.dataset.offsetMs);
  });
  var current = null;

  function seek(line) {
    player.currentTime = Number(line.dataset.offsetMs) / 1000;
    var playing = player.play();
    if (playing && playing.catch) playing.catch(function () {});  // autoplay refused: seek only
    highlight();
  }

  function highlight() {
    var now = player.currentTime * 1000;
    var found = null;
    for (var i = 0; i < lines.length; i++) {
      if (Number(lines[i].dataset.offsetMs) <= now + 1) found = lines[i];
      else break;
    }
    if (found === current) return;
    if (current) current.classList.remove("playing");
    current = found;
    if (current) current.classList.add("playing");
  }

  lines.forEach(function (line) {
    line.addEventListener("click", function () { seek(line); });
    line.addEventListener("keydown", function (event) {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        seek(line);
      }
    });
  });
  player.addEventListener("timeupdate", highlight);
  player.addEventListener("seeked", highlight);
})();
