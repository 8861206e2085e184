import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import bcrypt
import pytest
from aixiate_users.passwords import PasswordCheck, Passwords, lower_thread_priority
from aixiate_users.policy import common_passwords
from aixiate_users.settings import UsersSettings
from passlib.context import CryptContext  # type: ignore[import-untyped]

STRONG_PASSWORD = "vivid-otter-harbour-42"
FAST_PREFIX = "$argon2id$v=19$m=1024,t=1,p=1$"


class RecordingContext:
    """Wraps the service's CryptContext and notes the thread of every call."""

    def __init__(self, inner: CryptContext, *, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.threads: list[threading.Thread] = []
        self.verified_against: list[str] = []
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def _enter(self) -> None:
        with self._lock:
            self.threads.append(threading.current_thread())
            self.running += 1
            self.max_running = max(self.max_running, self.running)

    def _leave(self) -> None:
        with self._lock:
            self.running -= 1

    def hash(self, secret: bytes) -> str:
        self._enter()
        try:
            time.sleep(self.delay)
            hashed: str = self.inner.hash(secret)
            return hashed
        finally:
            self._leave()

    def verify(self, secret: bytes, password_hash: str) -> bool:
        self._enter()
        try:
            self.verified_against.append(password_hash)
            matches: bool = self.inner.verify(secret, password_hash)
            return matches
        finally:
            self._leave()

    def verify_and_update(self, secret: bytes, password_hash: str) -> tuple[bool, str | None]:
        self._enter()
        try:
            self.verified_against.append(password_hash)
            outcome: tuple[bool, str | None] = self.inner.verify_and_update(secret, password_hash)
            return outcome
        finally:
            self._leave()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def recording(service: Passwords, *, delay: float = 0.0) -> RecordingContext:
    recorder = RecordingContext(service._context, delay=delay)
    service._context = recorder
    return recorder


def argon2_hash(password: str, *, memory_kib: int, time_cost: int) -> str:
    context = CryptContext(
        schemes=["argon2"],
        argon2__type="ID",
        argon2__memory_cost=memory_kib,
        argon2__rounds=time_cost,
        argon2__parallelism=1,
    )
    hashed: str = context.hash(password)
    return hashed


class TestHash:
    async def test_argon2id_with_the_configured_parameters(self, passwords: Passwords) -> None:
        stored = await passwords.hash(STRONG_PASSWORD)

        assert stored.startswith(FAST_PREFIX)
        assert STRONG_PASSWORD not in stored

    async def test_salted(self, passwords: Passwords) -> None:
        assert await passwords.hash(STRONG_PASSWORD) != await passwords.hash(STRONG_PASSWORD)

    async def test_default_parameters_are_owasps(self) -> None:
        service = Passwords(UsersSettings(_env_file=None))
        try:
            stored = await service.hash(STRONG_PASSWORD)
            check = await service.verify(STRONG_PASSWORD, stored)
        finally:
            service.shutdown()

        assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert check == PasswordCheck(valid=True)


class TestVerify:
    async def test_right_password(self, passwords: Passwords) -> None:
        stored = await passwords.hash(STRONG_PASSWORD)

        assert await passwords.verify(STRONG_PASSWORD, stored) == PasswordCheck(valid=True)

    async def test_wrong_password(self, passwords: Passwords) -> None:
        stored = await passwords.hash(STRONG_PASSWORD)

        check = await passwords.verify(STRONG_PASSWORD + "!", stored)

        assert check == PasswordCheck(valid=False)

    async def test_unicode_forms_of_one_password_match(self, passwords: Passwords) -> None:
        composed = "caf\u00e9-au-lait-matin"
        decomposed = "cafe\u0301-au-lait-matin"
        stored = await passwords.hash(composed)

        assert (await passwords.verify(decomposed, stored)).valid

    async def test_legacy_bcrypt_verifies_and_is_upgraded(self, passwords: Passwords) -> None:
        legacy = bcrypt.hashpw(STRONG_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()

        check = await passwords.verify(STRONG_PASSWORD, legacy)

        assert check.valid
        assert check.new_hash is not None
        assert check.new_hash.startswith(FAST_PREFIX)
        assert await passwords.verify(STRONG_PASSWORD, check.new_hash) == PasswordCheck(True)

    async def test_legacy_bcrypt_wrong_password(self, passwords: Passwords) -> None:
        legacy = bcrypt.hashpw(STRONG_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()

        assert await passwords.verify("not-the-password", legacy) == PasswordCheck(False)

    async def test_legacy_bcrypt_of_a_long_password(self, passwords: Passwords) -> None:
        # Older bcrypt libraries hashed only the first 72 bytes; bcrypt 5 refuses more.
        long_password = "a-long-passphrase-" * 6
        legacy = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()

        check = await passwords.verify(long_password, legacy)

        assert check.valid
        assert check.new_hash is not None
        assert await passwords.verify(long_password, check.new_hash) == PasswordCheck(True)

    async def test_nul_against_bcrypt_is_a_mismatch(self, passwords: Passwords) -> None:
        legacy = bcrypt.hashpw(b"abc", bcrypt.gensalt(rounds=4)).decode()

        assert await passwords.verify("abc\x00def", legacy) == PasswordCheck(False)

    @pytest.mark.parametrize(("memory_kib", "time_cost"), [(512, 1), (1024, 2), (2048, 1)], ids=str)
    async def test_other_argon2_parameters_are_rehashed(
        self, passwords: Passwords, memory_kib: int, time_cost: int
    ) -> None:
        outdated = argon2_hash(STRONG_PASSWORD, memory_kib=memory_kib, time_cost=time_cost)

        check = await passwords.verify(STRONG_PASSWORD, outdated)

        assert check.valid
        assert check.new_hash is not None
        assert check.new_hash.startswith(FAST_PREFIX)

    async def test_wrong_password_against_outdated_hash_gives_no_rehash(
        self, passwords: Passwords
    ) -> None:
        outdated = argon2_hash(STRONG_PASSWORD, memory_kib=512, time_cost=1)

        assert await passwords.verify("wrong", outdated) == PasswordCheck(False)

    async def test_unknown_user_costs_an_argon2_verification(self, passwords: Passwords) -> None:
        recorder = recording(passwords)

        check = await passwords.verify(STRONG_PASSWORD, None)

        assert check == PasswordCheck(valid=False)
        assert len(recorder.verified_against) == 1
        assert recorder.verified_against[0].startswith(FAST_PREFIX)

    @pytest.mark.parametrize("stored", ["", "garbage", "$argon2id$v=19$m=1024,t=1,p=1$x$y"])
    async def test_corrupt_stored_hash_is_a_mismatch(
        self, passwords: Passwords, stored: str
    ) -> None:
        assert await passwords.verify(STRONG_PASSWORD, stored) == PasswordCheck(False)

    async def test_lone_surrogate_is_a_mismatch(self, passwords: Passwords) -> None:
        stored = await passwords.hash(STRONG_PASSWORD)

        assert await passwords.verify("\ud800" + STRONG_PASSWORD, stored) == PasswordCheck(False)


class TestThreadPool:
    async def test_hash_and_verify_run_off_the_event_loop(self, passwords: Passwords) -> None:
        recorder = recording(passwords)

        stored = await passwords.hash(STRONG_PASSWORD)
        await passwords.verify(STRONG_PASSWORD, stored)
        await passwords.verify(STRONG_PASSWORD, None)

        loop_thread = threading.current_thread()
        assert len(recorder.threads) == 3
        assert all(thread is not loop_thread for thread in recorder.threads)
        assert all(thread.name.startswith("aixiate-password") for thread in recorder.threads)

    async def test_pool_is_bounded_by_the_setting(
        self, make_users_settings: Callable[..., UsersSettings]
    ) -> None:
        service = Passwords(make_users_settings(password_hash_workers=2))
        recorder = recording(service, delay=0.02)
        try:
            await asyncio.gather(*(service.hash(STRONG_PASSWORD) for _ in range(8)))
        finally:
            service.shutdown()

        assert recorder.max_running == 2
        assert len({thread.ident for thread in recorder.threads}) <= 2

    async def test_loop_keeps_serving_while_hashing(
        self, make_users_settings: Callable[..., UsersSettings]
    ) -> None:
        service = Passwords(make_users_settings(password_hash_workers=1))
        recording(service, delay=0.2)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        try:
            await service.hash(STRONG_PASSWORD)
        finally:
            ticker.cancel()
            service.shutdown()

        assert ticks >= 5

    async def test_preload_reads_the_list_in_the_pool(self, passwords: Passwords) -> None:
        common_passwords.cache_clear()

        await passwords.preload()

        assert common_passwords.cache_info().currsize == 1

    async def test_usable_again_after_shutdown(self, passwords: Passwords) -> None:
        stored = await passwords.hash(STRONG_PASSWORD)
        passwords.shutdown()

        assert (await passwords.verify(STRONG_PASSWORD, stored)).valid


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
class TestWorkerPriority:
    """Hash workers yield the CPU to request handling when both want it."""

    async def nice_of_a_worker(self, settings: UsersSettings) -> int:
        service = Passwords(settings)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(service._pool(), _own_nice)
        finally:
            service.shutdown()

    async def test_workers_run_below_the_event_loop(self, users_settings: UsersSettings) -> None:
        lowered = users_settings.model_copy(update={"password_hash_nice": 7})

        assert await self.nice_of_a_worker(lowered) == min(19, _own_nice() + 7)

    async def test_zero_keeps_them_level(self, users_settings: UsersSettings) -> None:
        level = users_settings.model_copy(update={"password_hash_nice": 0})

        assert await self.nice_of_a_worker(level) == _own_nice()

    def test_lowering_never_touches_the_calling_thread(self) -> None:
        before = _own_nice()
        worker = threading.Thread(target=lower_thread_priority, args=(5,))
        worker.start()
        worker.join()

        assert _own_nice() == before
