"""The interpolation page in a real browser (issue 15): headless Chromium opens the ``index.html`` that
``midistruct quickstart`` (``make demo``) and ``midistruct interpolate`` write, here from a real interpolation
with the shipped model ``folk-2bar``, and every piano roll must decode and every player must hold sound the
browser can play.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON messages ending in
NUL, read by Chromium on fd 3 and written on fd 4), so no driver package is needed, and the probe waits on the
browser's own promises in real time (``--dump-dom --virtual-time-budget`` dumped the page before the audio had
decoded in 3 of 5 runs). Skipped when no Chromium is installed; ``.ci/run`` installs Debian's ``chromium``
where apt can.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason=f"no headless browser found ({', '.join(BROWSERS)}); "
                                                        "install one, e.g. apt-get install chromium")
TIMEOUT_S = 60

# Runs in the page: each image decoded (its natural and laid-out width), each player loaded as the browser
# would on a click (readyState, duration, error) and its source decoded by Web Audio (duration, peak).
# Playing it for a quarter of a second shows the clock of the first player moving.
PROBE = """(async () => {
  const context = new AudioContext();
  const image = async img => {
    await img.decode().catch(() => null);
    return {natural: img.naturalWidth, shown: img.getBoundingClientRect().width};
  };
  const audio = async a => {
    await new Promise(done => {
      a.addEventListener('loadedmetadata', done, {once: true});
      a.addEventListener('error', done, {once: true});
      a.load();
    });
    const item = {ready: a.readyState, duration: a.duration, error: a.error ? a.error.code : null};
    try {
      const buffer = await context.decodeAudioData(await (await fetch(a.currentSrc)).arrayBuffer());
      item.decoded = buffer.duration;
      item.peak = buffer.getChannelData(0).reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    } catch (err) { item.decoded = String(err); }
    return item;
  };
  const result = {images: await Promise.all([...document.images].map(image)),
                  audio: await Promise.all([...document.querySelectorAll('audio')].map(audio))};
  const first = document.querySelector('audio');
  try {
    await first.play();
    await new Promise(done => setTimeout(done, 250));
    result.played = first.currentTime;
    first.pause();
  } catch (err) { result.played = String(err); }
  return result;
})()"""


class DevTools:
    """A headless Chromium and one page, spoken to over ``--remote-debugging-pipe``."""

    def __init__(self, browser: str, profile: Path):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def wire():  # in the child: the protocol's fds 3 (commands in) and 4 (replies out)
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile / "stderr.txt"  # quoted when the browser fails
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--mute-audio", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}",
                 "--remote-debugging-pipe", "about:blank"],
                stdout=subprocess.DEVNULL, stderr=log, pass_fds=(3, 4), preexec_fn=wire)
        os.close(to_browser), os.close(from_browser)
        self._buffer, self._next_id, self.events = b"", 0, []
        self.deadline = time.monotonic() + TIMEOUT_S

    def call(self, method: str, session: str | None = None, **params) -> dict:
        """Send one command and return its result (events that arrive meanwhile go to :attr:`events`)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        try:
            os.write(self._write, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise RuntimeError(f"{BROWSER} exited with code {self.process.wait()}{self._said()}") from None
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def open(self, page: Path) -> str:
        """A new tab showing ``page`` once its load event fired; its session id."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session)
        self.call("Page.navigate", session, url=page.resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        return session

    def wait_for(self, method: str) -> dict:
        """The first event called ``method``, already received or next to come."""
        while True:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(self._receive())

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError(f"{BROWSER} did not answer within {TIMEOUT_S} s{self._said()}")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"{BROWSER} exited with code {self.process.wait()}{self._said()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _said(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines()[-5:]
        return "; its last words: " + " / ".join(lines) if lines else ""

    def close(self) -> None:
        """Ask the browser to quit (it takes its renderers with it); terminate it if it does not."""
        try:
            os.write(self._write, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.terminate()
            self.process.wait(10)
        finally:
            os.close(self._write), os.close(self._read)


def probe(page: Path, profile: Path) -> dict:
    """Open ``page`` in headless Chromium, wait for its load event and return what :data:`PROBE` found."""
    browser = DevTools(BROWSER, profile)
    try:
        session = browser.open(page)
        result = browser.call("Runtime.evaluate", session, expression=PROBE, awaitPromise=True, returnByValue=True)
    finally:
        browser.close()
    assert "exceptionDetails" not in result, result["exceptionDetails"]
    return result["result"]["value"]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """The demo's page for a 2-step interpolation between folk-2bar's example tunes, cut to 2 bars."""
    from midistruct.model import pretrained
    from midistruct.quickstart import interpolate_pieces

    out = tmp_path_factory.mktemp("browser") / "out"
    a, b = pretrained.example_paths("folk-2bar")
    return Path(interpolate_pieces("folk-2bar", a, b, out, steps=2, bars=2)["page"])


def _stated_seconds(html: str) -> list[float]:
    """The length the page prints under each player (``3.9 s``)."""
    return [float(s) for s in re.findall(r" · ([0-9.]+) s</p>", html)]


def test_every_piano_roll_decodes_and_every_player_plays(page, tmp_path):
    found = probe(page, tmp_path / "profile")
    assert len(found["images"]) == len(found["audio"]) == 4  # A, step 0, step 1, B
    for image in found["images"]:
        assert image["natural"] > 0 and image["shown"] > 0, image
    for audio, seconds in zip(found["audio"], _stated_seconds(page.read_text()), strict=True):
        assert audio["error"] is None and audio["ready"] >= 1, audio  # HAVE_METADATA: the player can start
        assert audio["duration"] == pytest.approx(seconds, abs=0.05), audio  # the page prints it rounded
        assert audio["decoded"] == pytest.approx(audio["duration"], abs=1e-3), audio
        assert audio["peak"] > 0.01, audio  # sound, not silence
    assert isinstance(found["played"], float) and found["played"] > 0, found["played"]


def test_the_probe_sees_a_broken_image_and_a_broken_recording(page, tmp_path):
    """The same page with the first PNG's and the first WAV's bytes replaced: the probe must say so."""
    html = page.read_text()
    for kind in ("image/png", "audio/wav"):
        html = re.sub(rf"data:{kind};base64,[A-Za-z0-9+/]{{64}}", f"data:{kind};base64," + "A" * 64, html, count=1)
    broken = page.with_name("broken.html")
    broken.write_text(html)
    found = probe(broken, tmp_path / "profile")
    assert [image["natural"] > 0 for image in found["images"]] == [False, True, True, True]
    assert [audio["error"] is None for audio in found["audio"]] == [False, True, True, True]
    assert isinstance(found["audio"][0]["decoded"], str)  # the decoder's error message
