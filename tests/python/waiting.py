"""Waiting for what a hub does after it answers (a push to a device, a configuration applied):
poll `check` until it holds, or fail naming `what`. Shared by the Python suites."""

import asyncio
import time


def eventually(check, what, timeout=15, every=0.1):
    """Polls `check()` (blocking) until it is true, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


async def eventually_async(check, what, timeout=30, every=0.25):
    """The same inside an event loop, yielding to the SDK's tasks while it waits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")
