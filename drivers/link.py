"""What every real driver does around a transaction: timeout, retry, backoff, health.

A *transient* error (a timeout, a garbled frame, a dropped connection) is retried with
exponential backoff, reconnecting in between when the link says it is broken; a device
that *answered* with an error (``DeviceFault``: an exception code, a NAK, ``?``) is not
retried: asking again would get the same answer. Every attempt is bounded by the policy's
timeout, so nothing ever waits on a silent device for longer than
``attempts x (timeout + backoff)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from drivers.base import (
    CommunicationError,
    DeviceError,
    DeviceFault,
    DeviceTimeout,
    Health,
    OptionError,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    timeout_s: float = 0.5
    """Per attempt."""
    attempts: int = 3
    backoff_s: float = 0.02
    backoff_max_s: float = 0.5

    @classmethod
    def from_options(cls, options: dict[str, object], **defaults: float) -> RetryPolicy:
        """Read ``timeout``/``retries`` (seconds / count) from driver options."""
        base = cls(**defaults)  # type: ignore[arg-type]
        timeout = options.pop("timeout", base.timeout_s)
        retries = options.pop("retries", base.attempts - 1)
        if not isinstance(timeout, int | float) or timeout <= 0:
            msg = "option 'timeout' must be a positive number of seconds"
            raise OptionError("timeout", msg)
        if not isinstance(retries, int) or retries < 0:
            msg = "option 'retries' must be a whole number >= 0"
            raise OptionError("retries", msg)
        return cls(float(timeout), retries + 1, base.backoff_s, base.backoff_max_s)


async def transact(
    device: str,
    health: Health,
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    reconnect: Callable[[], Awaitable[None]] | None = None,
) -> T:
    """Run ``attempt`` under ``policy``; raise the last error, always naming ``device``."""
    delay = policy.backoff_s
    last: DeviceError | None = None
    for n in range(policy.attempts):
        if n:
            health.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, policy.backoff_max_s)
            if reconnect is not None and isinstance(last, CommunicationError | DeviceTimeout):
                # bounded like an attempt: a peer whose TCP stack takes no connection (SYNs
                # dropped) would otherwise hold the caller, and the bus lock, for the
                # library's own connect timeout (pymodbus: 30 s here)
                try:
                    async with asyncio.timeout(policy.timeout_s):
                        await reconnect()
                    health.reconnects += 1
                except TimeoutError:
                    last = DeviceTimeout(
                        device, f"reconnect: no connection within {policy.timeout_s:g} s"
                    )
                    health.record_failure(last)
                    continue
                except (OSError, DeviceError) as exc:
                    last = CommunicationError(device, f"reconnect failed: {exc}")
                    health.record_failure(last)
                    continue
        try:
            async with asyncio.timeout(policy.timeout_s):
                result = await attempt()
        except TimeoutError:
            last = DeviceTimeout(device, f"no answer within {policy.timeout_s:g} s")
        except DeviceFault as exc:
            health.record_failure(exc)
            raise
        except (CommunicationError, DeviceTimeout) as exc:
            last = exc
        except (OSError, EOFError, ConnectionError) as exc:
            last = CommunicationError(device, f"link error: {exc}")
        else:
            health.record_ok()
            health.connected = True
            return result
        health.record_failure(last)
    assert last is not None
    if policy.attempts > 1:
        last.args = (f"{last.args[0]} (after {policy.attempts} attempts)",)
    raise last
