"""Every HTTP answer the guard reads, read with a cap: the pause API's and the notification receivers'.

A receiver (a proxy's error page, a broken or hostile endpoint) may answer with a body of any size,
or one that never ends; reading it whole would grow the process until it is killed. The guard reads
at most `cap` bytes and closes the connection instead of reading on.
"""

from __future__ import annotations

import httpx

# An answer the guard uses is a few hundred bytes; beyond this a body is not read.
MAX_RESPONSE_BYTES = 64 * 1024


async def send_capped(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    content: bytes | None = None,
    cap: int = MAX_RESPONSE_BYTES,
) -> tuple[httpx.Response, bytes]:
    """The response and at most `cap` bytes of its body; the rest is never read (the connection is
    closed instead). Raw bytes, and no compression asked for: no decompression bomb."""
    headers = {**headers, "Accept-Encoding": "identity"}
    async with client.stream(method, url, headers=headers, content=content) as response:
        body = bytearray()
        if cap > 0:  # 0: the status is the answer, and not a byte of the body is waited for
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= cap:
                    break
        return response, bytes(body[:cap])
