"""The registry of the packages' email templates: core's layout under every package's
bodies, and names that two packages claim refused when the app is built."""

import pytest
from aixiate_core.email_templates import EmailTemplates, EmailTemplateSet
from jinja2 import DictLoader

VALUES = {"product_name": "Aixiate", "public_url": "https://app.example", "name": "Ada"}


def email_set(name: str, subject: str = "Hello from {product_name}") -> EmailTemplateSet:
    return EmailTemplateSet(
        subjects={name: subject},
        loader=DictLoader(
            {
                f"{name}.txt.j2": "Hi {{ name }}: " + name + "\n",
                f"{name}.html.j2": (
                    '{% extends "_layout.html.j2" %}{% block body %}<p>'
                    + name
                    + "</p>{% endblock %}"
                ),
            }
        ),
    )


class TestEmailTemplates:
    def test_each_package_renders_its_own_in_core_layout(self) -> None:
        templates = EmailTemplates(email_set("welcome"), email_set("farewell", "Bye"))

        subject, text, html = templates.render("welcome", VALUES)

        assert subject == "Hello from Aixiate"
        assert text == "Hi Ada: welcome\n"
        assert "Aixiate</h1>" in html
        assert "<p>welcome</p>" in html
        assert templates.render("farewell", VALUES)[0] == "Bye"

    def test_an_email_named_twice_is_refused(self) -> None:
        claim = EmailTemplateSet(subjects={"welcome": "Hi"}, loader=DictLoader({}))
        with pytest.raises(ValueError, match="email 'welcome' is defined twice"):
            EmailTemplates(email_set("welcome"), claim)
        with pytest.raises(ValueError, match=r"template 'welcome\.\w+\.j2' is defined twice"):
            EmailTemplates(email_set("welcome"), email_set("welcome"))

    def test_a_template_file_shipped_twice_is_refused(self) -> None:
        shadow = EmailTemplateSet(
            subjects={}, loader=DictLoader({"_layout.html.j2": "{% block body %}{% endblock %}"})
        )
        with pytest.raises(ValueError, match=r"'_layout\.html\.j2' is defined twice"):
            EmailTemplates(email_set("welcome"), shadow)

    def test_an_email_needs_both_bodies_in_its_own_set(self) -> None:
        text_only = EmailTemplateSet(
            subjects={"welcome": "Hi"}, loader=DictLoader({"welcome.txt.j2": "Hi"})
        )
        with pytest.raises(ValueError, match=r"'welcome' has no welcome\.html\.j2"):
            EmailTemplates(text_only)
        # Nor may another package's file stand in for it.
        html_elsewhere = EmailTemplateSet(
            subjects={}, loader=DictLoader({"welcome.html.j2": "<p>Hi</p>"})
        )
        with pytest.raises(ValueError, match=r"'welcome' has no welcome\.html\.j2"):
            EmailTemplates(text_only, html_elsewhere)

    def test_unknown_email_is_a_key_error(self) -> None:
        with pytest.raises(KeyError):
            EmailTemplates().render("welcome", VALUES)
