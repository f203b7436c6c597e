"""Lockdown sessions of one iPhone open one at a time in a process (a phone not yet paired
would be paired twice at once: two pair records, one of them stale), through
pymobiledevice3's create_using_usbmux, replaced here by a recorder."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from devicelab.platforms import ios
from devicelab.platforms.ios import open_lockdown, run_private
from tests.together import at_once


class _Recorder:
    """Stands in for create_using_usbmux: counts the openings in progress per phone."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.guard = threading.Lock()
        self.now: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.opened = 0

    async def __call__(self, serial: str, usbmux_address: str | None = None) -> str:
        with self.guard:
            self.now[serial] = self.now.get(serial, 0) + 1
            self.most[serial] = max(self.most.get(serial, 0), self.now[serial])
        try:
            await asyncio.sleep(self.seconds)
        finally:
            with self.guard:
                self.now[serial] -= 1
                self.opened += 1
        return f"lockdown of {serial}"


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    pytest.importorskip("pymobiledevice3")
    import pymobiledevice3.lockdown

    fake = _Recorder(seconds=0.2)
    monkeypatch.setattr(pymobiledevice3.lockdown, "create_using_usbmux", fake)
    monkeypatch.setattr(ios, "_OPENING", {})
    return fake


def test_one_phone_opens_one_session_at_a_time_and_two_phones_at_once(
    recorder: _Recorder,
) -> None:
    """Four openers per phone, each in its own thread and event loop (as a run's sampler
    and web inspector check): never two at once on one phone; two phones overlap."""
    phones = iter(["PHONE-A", "PHONE-B"] * 4)
    pick = threading.Lock()

    def one() -> None:
        with pick:
            udid = next(phones)
        assert run_private(lambda: open_lockdown(udid, None), 30) == f"lockdown of {udid}"

    started = time.monotonic()
    assert at_once(one, 8) == []
    assert recorder.opened == 8
    assert recorder.most == {"PHONE-A": 1, "PHONE-B": 1}
    # Serialized per phone (4 x 0.2 s each), not across phones (that would take 1.6 s).
    assert time.monotonic() - started < 1.4


def test_an_opener_cancelled_while_waiting_leaves_the_phone_free(recorder: _Recorder) -> None:
    """A caller whose timeout ends its wait holds nothing: the next opening goes ahead."""

    async def waiting_then_cancelled() -> Any:
        first = asyncio.create_task(open_lockdown("PHONE-C", None))
        await asyncio.sleep(0.05)  # the first holds the phone
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(open_lockdown("PHONE-C", None), timeout=0.05)
        await first
        return await asyncio.wait_for(open_lockdown("PHONE-C", None), timeout=1)

    # In a thread of its own: an opener that kept waiting after its cancellation (a thread
    # blocked on the lock) would hang asyncio.run's shutdown, not fail.
    got: list[Any] = []
    runner = threading.Thread(target=lambda: got.append(asyncio.run(waiting_then_cancelled())),
                              daemon=True)  # fmt: skip
    runner.start()
    runner.join(timeout=10)
    assert not runner.is_alive(), "the phone stayed held after a cancelled wait"
    assert got == ["lockdown of PHONE-C"]
    assert recorder.opened == 2
    assert recorder.most == {"PHONE-C": 1}
