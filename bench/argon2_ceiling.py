"""How many logins per second argon2 alone allows, with the service's own parameters.

The parameters (``AIXIATE_ARGON2_TIME_COST``, ``AIXIATE_ARGON2_MEMORY_KIB``,
``AIXIATE_ARGON2_PARALLELISM``, ``AIXIATE_PASSWORD_HASH_WORKERS``) are read through the
service's ``UsersSettings``, so the defaults and the environment are exactly the ones the
running service uses. A login verifies one argon2id hash in one of ``hash workers``
threads; the ceiling is ``hash_workers / median single verify time``.

Prints one JSON object on stdout.
"""

import argparse
import json
import secrets
import statistics
import threading
import time
from typing import Any

from aixiate_users.settings import UsersSettings
from argon2 import PasswordHasher, Type
from passlib.context import CryptContext  # type: ignore[import-untyped]


def _time_verify(hasher: PasswordHasher, password_hash: str, secret: bytes, n: int) -> list[float]:
    samples: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        hasher.verify(password_hash, secret)
        samples.append(time.perf_counter() - start)
    return samples


def _parallel_rate(
    hasher: PasswordHasher, password_hash: str, secret: bytes, threads: int, seconds: float
) -> float:
    """Verifies per second with ``threads`` threads verifying back to back (argon2-cffi
    releases the GIL), i.e. what the machine gives the service's hash pool at best."""
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def work(index: int) -> None:
        while time.perf_counter() < deadline:
            hasher.verify(password_hash, secret)
            counts[index] += 1

    started = time.perf_counter()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def measure(samples: int, parallel_seconds: float) -> dict[str, Any]:
    settings = UsersSettings()
    hasher = PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )
    secret = secrets.token_urlsafe(18).encode()
    password_hash = hasher.hash(secret)
    _time_verify(hasher, password_hash, secret, 3)  # warm-up: page in the memory
    times = _time_verify(hasher, password_hash, secret, samples)
    median = statistics.median(times)

    # What the service calls: passlib's verify_and_update (argon2-cffi underneath).
    context = CryptContext(
        schemes=["argon2"],
        argon2__type="ID",
        argon2__rounds=settings.argon2_time_cost,
        argon2__memory_cost=settings.argon2_memory_kib,
        argon2__parallelism=settings.argon2_parallelism,
    )
    passlib_hash = context.hash(secret)
    passlib_times = []
    for _ in range(max(5, samples // 3)):
        start = time.perf_counter()
        context.verify_and_update(secret, passlib_hash)
        passlib_times.append(time.perf_counter() - start)

    workers = settings.password_hash_workers
    result: dict[str, Any] = {
        "time_cost": settings.argon2_time_cost,
        "memory_kib": settings.argon2_memory_kib,
        "parallelism": settings.argon2_parallelism,
        "hash_workers": workers,
        "samples": samples,
        "verify_median_ms": median * 1000,
        "verify_min_ms": min(times) * 1000,
        "verify_max_ms": max(times) * 1000,
        "passlib_verify_median_ms": statistics.median(passlib_times) * 1000,
        "ceiling_logins_per_s": workers / median,
    }
    if parallel_seconds > 0:
        result["parallel_verifies_per_s"] = _parallel_rate(
            hasher, password_hash, secret, workers, parallel_seconds
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=40, help="single verifies to time")
    parser.add_argument(
        "--parallel-seconds",
        type=float,
        default=3.0,
        help="also measure verifies/s with hash_workers threads for this long (0: skip)",
    )
    args = parser.parse_args()
    print(json.dumps(measure(args.samples, args.parallel_seconds)))


if __name__ == "__main__":
    main()
