import pytest
from aixiate_users.errors import WeakPassword
from aixiate_users.passwords import Passwords
from aixiate_users.policy import PasswordPolicy, common_passwords, is_common

DEFAULT = PasswordPolicy(min_length=12, max_length=128)
# With the floor of 8, the common-password list is reached by shorter passwords too.
SHORTEST = PasswordPolicy(min_length=8, max_length=128)


def reason(policy: PasswordPolicy, password: str, email: str | None = None) -> str | None:
    """The reason the policy gives, or None when it accepts the password."""
    try:
        policy.check(password, email=email)
    except WeakPassword as exc:
        caught = exc
    else:
        return None
    assert caught.status_code == 422
    assert caught.code == "weak_password"
    assert caught.detail
    return str(caught.extra["reason"])


class TestLength:
    def test_shorter_than_the_minimum(self) -> None:
        assert reason(DEFAULT, "x7!kq2Lm#pZ") == "too_short"

    def test_exactly_the_minimum(self) -> None:
        assert reason(DEFAULT, "x7!kq2Lm#pZ4") is None

    def test_exactly_the_maximum(self) -> None:
        assert reason(DEFAULT, "k3" * 64) is None

    def test_longer_than_the_maximum(self) -> None:
        assert reason(DEFAULT, "k3" * 64 + "x") == "too_long"

    def test_problem_names_the_limits(self) -> None:
        with pytest.raises(WeakPassword) as short:
            DEFAULT.check("short")
        with pytest.raises(WeakPassword) as long:
            DEFAULT.check("x" * 129)

        assert short.value.extra == {"reason": "too_short", "min_length": 12}
        assert "12" in short.value.detail
        assert long.value.extra == {"reason": "too_long", "max_length": 128}

    def test_counts_code_points_not_bytes(self) -> None:
        kanji = "\u6c34\u6728\u706b\u571f\u91d1\u65e5\u6708\u5c71\u5ddd\u7530\u4eba\u53e3"
        assert len(kanji) == 12
        assert len(kanji.encode()) == 36

        assert reason(DEFAULT, kanji) is None

    def test_counts_after_nfkc_normalization(self) -> None:
        decomposed = "e\u0301" * 11  # 22 code points, 11 after composing
        ligatures = "\ufb00" * 6  # 6 code points, "ff" * 6 after NFKC

        assert reason(DEFAULT, decomposed) == "too_short"
        assert reason(DEFAULT, ligatures + "-zq9w") is None

    def test_lone_surrogates_are_refused(self) -> None:
        assert reason(DEFAULT, "\ud800" + "x7!kq2Lm#pZ4") == "invalid_characters"


class TestNoCompositionRules:
    @pytest.mark.parametrize(
        "password",
        [
            "correct horse battery staple",
            "all lower case words here",
            "748392016574839",
            "ÜBERMÄẞIG-LANG-UND-GROẞ",
            "пароль для почты мой",
            "   spaces   around   ",
        ],
    )
    def test_accepted(self, password: str) -> None:
        assert reason(DEFAULT, password) is None


class TestCommonPasswords:
    def test_list_is_large(self) -> None:
        entries = common_passwords()

        assert len(entries) >= 100_000
        assert all(len(entry) >= 8 for entry in entries)
        assert all(entry == entry.lower() for entry in entries)

    def test_loaded_once(self) -> None:
        assert common_passwords() is common_passwords()

    @pytest.mark.parametrize(
        "password", ["password123", "PASSWORD123", "Password123", "iloveyou", "qwertyuiop"]
    )
    def test_rejected_case_insensitively(self, password: str) -> None:
        assert is_common(password)
        assert reason(SHORTEST, password) == "common"

    @pytest.mark.parametrize("password", ["1qaz2wsx3edc", "qwerty123456", "123qweasdzxc"])
    def test_rejected_at_the_default_length(self, password: str) -> None:
        assert reason(DEFAULT, password) == "common"

    def test_fullwidth_forms_are_normalized(self) -> None:
        fullwidth = "".join(chr(ord(char) + 0xFEE0) for char in "password123")

        assert reason(SHORTEST, fullwidth) == "common"

    def test_an_uncommon_password_passes(self) -> None:
        assert not is_common("vivid-otter-harbour-42")


class TestContainsEmail:
    def test_whole_address(self) -> None:
        assert reason(DEFAULT, "xx-alice@example.com-xx", "alice@example.com") == "contains_email"

    def test_local_part(self) -> None:
        assert reason(DEFAULT, "my-name-is-alice!!", "alice@example.com") == "contains_email"

    def test_case_insensitive(self) -> None:
        assert reason(DEFAULT, "My-Name-Is-ALICE!!", "Alice@Example.com") == "contains_email"

    def test_short_local_part_is_not_matched(self) -> None:
        # "bob" is inside too many unrelated words to be a useful signal.
        assert reason(DEFAULT, "bobsled-champion-7", "bob@example.com") is None

    def test_four_character_local_part_is_matched(self) -> None:
        assert reason(DEFAULT, "xx-dave-likes-tea", "dave@example.com") == "contains_email"

    def test_without_email_only_the_other_rules_apply(self) -> None:
        assert reason(DEFAULT, "my-name-is-alice!!") is None


class TestService:
    def test_service_applies_the_configured_policy(self, passwords: Passwords) -> None:
        with pytest.raises(WeakPassword) as caught:
            passwords.check_policy("a" * 11)

        assert caught.value.extra["reason"] == "too_short"
        passwords.check_policy("vivid-otter-harbour-42", email="alice@example.com")
