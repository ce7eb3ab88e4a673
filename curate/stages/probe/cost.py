"""What a source will cost to curate, from its container header alone (no decoding): the pixels of its
frames. The run orders its last sources by it, so a small file of large frames is not the one every
other worker waits for. It runs on the workers, never in the driver: opening a hostile file can crash
FFmpeg, and a worker that dies costs only the estimate."""

from __future__ import annotations


def header_cost(path: str | None) -> float | None:
    """Frames x width x height as the header declares them; None when it does not say or cannot be read."""
    if not path:
        return None
    from dataload.backends.container import choose_stream, open_container

    try:
        container = open_container(path)  # regular files only: a FIFO or device is refused, never opened
    except Exception:  # noqa: BLE001 - any unreadable header: the caller falls back to the file size
        return None
    try:
        stream = choose_stream(container, path, None)
        frames = float(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
        if not frames and container.duration and rate:
            frames = container.duration / 1e6 * float(rate)  # container duration is in microseconds
        cc = stream.codec_context
        pixels = (cc.width or 0) * (cc.height or 0) if cc is not None else 0
        return frames * pixels if frames > 0 and pixels > 0 else None
    except Exception:  # noqa: BLE001
        return None
    finally:
        container.close()


def header_costs(paths: list[str | None]) -> list[float | None]:
    """`header_cost` of each path (one job per worker: the opens are milliseconds each)."""
    return [header_cost(p) for p in paths]
