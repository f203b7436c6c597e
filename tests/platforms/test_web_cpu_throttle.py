"""The web device's CPU slowdown (the story's "4x CPU slowdown, typical mobile"): a real
Chromium through Playwright, with DevTools' CPU throttling of the page."""

from __future__ import annotations

import shutil
import statistics

import pytest

from devicelab.models import Device
from devicelab.platforms.web import WebDevice

pytestmark = pytest.mark.skipif(
    not shutil.which("chromium"), reason="needs chromium (apt-get install chromium)"
)

# A fixed amount of work on the page's main thread; the page's own clock times it.
BUSY = """() => {
  const start = performance.now();
  let x = 0;
  for (let i = 0; i < 5e7; i++) x = (x + i * 7) % 1000003;
  return performance.now() - start + x * 0;
}"""


def _busy_ms(device: Device) -> tuple[float, str]:
    with WebDevice(device, proxy_url=None) as web:
        web.open("about:blank")
        web.evaluate(BUSY)  # warm the JIT
        runs = [float(web.evaluate(BUSY)) for _ in range(3)]
        return statistics.median(runs), web.info().model


def test_a_throttled_page_runs_the_same_work_several_times_slower() -> None:
    plain = Device(id="web", platform="web", model="Chromium", os="Debian 12")
    slow = plain.model_copy(update={"id": "web-4x-cpu", "cpu_throttle": 4})
    fast_ms, fast_model = _busy_ms(plain)
    slow_ms, slow_model = _busy_ms(slow)
    assert 2.0 <= slow_ms / fast_ms <= 8, (fast_ms, slow_ms)
    assert fast_model == "Chromium"
    assert slow_model == "Chromium, CPU 4x slower (CDP)"


def test_cpu_throttle_is_for_web_devices_only() -> None:
    with pytest.raises(ValueError, match="cpu_throttle is for web devices"):
        Device(platform="android", model="x", os="Android 13", serial="S1", cpu_throttle=4)
    with pytest.raises(ValueError):
        Device(platform="web", model="x", os="Debian", cpu_throttle=0.5)
