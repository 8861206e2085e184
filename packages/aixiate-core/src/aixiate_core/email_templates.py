"""Email templates: each package ships and names its own emails, the app puts them together.

A package keeps the bodies of its emails (``<name>.txt.j2`` and ``<name>.html.j2``) in
``templates/email`` inside itself and exposes them with their subjects as an
:class:`EmailTemplateSet`. Whoever assembles the app builds one :class:`EmailTemplates`
from the sets of the packages it mounts and hands it to the outbox
(:func:`aixiate_core.resources.open_resources`). Core contributes only the layout that
HTML bodies extend, ``_layout.html.j2``.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    PackageLoader,
    StrictUndefined,
    select_autoescape,
)

TEMPLATE_DIR = "templates/email"


@dataclass(frozen=True, slots=True)
class EmailTemplateSet:
    """One package's emails: the subject of each by template name (``{product_name}`` is
    filled in), and the loader that finds their bodies."""

    subjects: Mapping[str, str]
    loader: BaseLoader


def package_templates(package: str, subjects: Mapping[str, str]) -> EmailTemplateSet:
    """The set whose bodies are in ``templates/email`` of ``package``: they ship inside its
    wheel, wherever it is installed."""
    return EmailTemplateSet(subjects=subjects, loader=PackageLoader(package, TEMPLATE_DIR))


class EmailTemplates:
    """Every email an app can send, from the packages that send them.

    The sets are given explicitly, so an app holds the emails of the packages it mounts
    and nothing registers itself on import. A template file or email name defined by two
    sets, or an email without both bodies, fails here, when the app is built, rather
    than at the first message (one set's file would silently shadow the other's).
    """

    def __init__(self, *sets: EmailTemplateSet) -> None:
        layout = package_templates("aixiate_core", {})
        owner: dict[str, EmailTemplateSet] = {}
        for template_set in (layout, *sets):
            for file in template_set.loader.list_templates():
                if file in owner:
                    raise ValueError(f"email template {file!r} is defined twice")
                owner[file] = template_set
        self._subjects: dict[str, str] = {}
        for template_set in sets:
            for name, subject in template_set.subjects.items():
                if name in self._subjects:
                    raise ValueError(f"email {name!r} is defined twice")
                for file in (f"{name}.txt.j2", f"{name}.html.j2"):
                    if owner.get(file) is not template_set:
                        raise ValueError(f"email {name!r} has no {file} beside its subject")
                self._subjects[name] = subject
        self._env = Environment(
            loader=ChoiceLoader([layout.loader, *(s.loader for s in sets)]),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, template: str, values: Mapping[str, Any]) -> tuple[str, str, str]:
        """Subject, plain text and HTML. HTML autoescapes every value (names included)."""
        subject = self._subjects[template].format(product_name=values["product_name"])
        text = self._env.get_template(f"{template}.txt.j2").render(values)
        html = self._env.get_template(f"{template}.html.j2").render(values)
        return subject, text, html
