"""The emails this package sends: subjects here, bodies in ``templates/email``.

The app passes :data:`EMAILS` to core's ``EmailTemplates`` with the other packages' sets.
"""

from aixiate_core.email_templates import EmailTemplateSet, package_templates

EMAILS: EmailTemplateSet = package_templates(
    "aixiate_users",
    {
        "email_change_confirm": "Confirm your new email address for {product_name}",
        "email_change_notice": "Your {product_name} email address is being changed",
        "email_change_taken": "Someone tried to move an account to your email at {product_name}",
    },
)
